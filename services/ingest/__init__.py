"""The ingest service: MQTT in, TimescaleDB out, acknowledged only after commit."""
