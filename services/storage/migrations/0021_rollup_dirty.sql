-- The roll-ups' invalidation log: ingest appends the (device, metric, minute) keys its
-- inserted readings touched, in the batch's own transaction; the maintenance process
-- folds and deletes them (services/storage/fold.py). Append-only, no key and no index, so
-- concurrent writers never wait for each other's rows; the fold reads it whole. Logged:
-- a key lost in a crash would leave its minute stale.
-- IF NOT EXISTS: the file may be renumbered when branches merge without failing twice.
CREATE TABLE IF NOT EXISTS rollup_dirty (
    device_id text NOT NULL,
    metric text NOT NULL,
    minute timestamptz NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);

-- What the last fold did, for the lag metric (commit → folded) and /readyz-style checks.
CREATE TABLE IF NOT EXISTS rollup_fold_progress (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    folded_at timestamptz,
    keys bigint NOT NULL DEFAULT 0,
    oldest_committed_at timestamptz
);
INSERT INTO rollup_fold_progress (id) VALUES (true) ON CONFLICT DO NOTHING;

-- Delivery accounting becomes append-only: each batch adds its own rows, readers sum them
-- (they always did). An upsert of the park's current minute was a row every worker
-- locked until its commit, so workers waited for each other there.
ALTER TABLE delivery_1m DROP CONSTRAINT IF EXISTS delivery_1m_pkey;
CREATE INDEX IF NOT EXISTS delivery_1m_park_minute_idx ON delivery_1m (park_id, minute);
