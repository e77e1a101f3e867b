-- Ingest workers that split the parks among themselves (services/core/assignment.py)
-- report the registry version whose filters the broker has acknowledged; a fleet load
-- that adds parks waits for them (services/storage/heartbeat.py), so the new parks'
-- messages find a subscription once the load has returned.
ALTER TABLE ingest_workers
    ADD COLUMN subscribed_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN follows_registry boolean NOT NULL DEFAULT false;
