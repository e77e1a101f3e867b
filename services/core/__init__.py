"""Pure ingest and signal logic: no sockets, clocks, event loop, paho, psycopg or fastapi."""
