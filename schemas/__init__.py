"""Pydantic models that cross a boundary: the MQTT wire contract, the fleet file and the API."""
