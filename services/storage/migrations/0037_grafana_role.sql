-- A read-only role for Grafana (deploy/grafana, docs/grafana.md): SELECT on what the
-- dashboard shows and nothing else. No login and no password here: an operator turns it
-- into a login role with a password of their own (ALTER ROLE parksense_grafana LOGIN
-- PASSWORD '…', or GRAFANA_DB_PASSWORD for deploy/bootstrap.py). Roles belong to the
-- cluster, so a second database of the same cluster finds it made.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'parksense_grafana') THEN
        CREATE ROLE parksense_grafana NOLOGIN;
    END IF;
END
$$;
-- Every query it runs is read-only and bounded in time.
ALTER ROLE parksense_grafana SET default_transaction_read_only = on;
ALTER ROLE parksense_grafana SET statement_timeout = '30s';
GRANT USAGE ON SCHEMA public TO parksense_grafana;
GRANT SELECT ON parks, factories, park_signals_1m, park_metric_1m, delivery_1m
    TO parksense_grafana;
-- Dead letters: the counts by reason, not the refused payloads or their details.
GRANT SELECT (park_id, received_at, reason, refused) ON dead_letters TO parksense_grafana;
