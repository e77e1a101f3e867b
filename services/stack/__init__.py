"""The local stack: its own PostgreSQL + TimescaleDB, Mosquitto and parksense services."""
