-- Each ingest worker reports here every few seconds, so /readyz can tell a degraded pipeline.
CREATE TABLE ingest_workers (
    client_id        text PRIMARY KEY,
    pid              integer NOT NULL,
    started_at       timestamptz NOT NULL,
    heartbeat_at     timestamptz NOT NULL,
    registry_version bigint NOT NULL DEFAULT 0,
    degraded         boolean NOT NULL DEFAULT false,
    buffered         integer NOT NULL DEFAULT 0
);
