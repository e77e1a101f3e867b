"""PostgreSQL + TimescaleDB storage: migrations, the COPY writer and read queries (psycopg 3)."""
