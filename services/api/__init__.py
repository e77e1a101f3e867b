"""The HTTP API (FastAPI): parks, devices, signals, the live stream and the dashboard."""
