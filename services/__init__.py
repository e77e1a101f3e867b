"""parksense services: ingest, storage, API and the local stack."""
