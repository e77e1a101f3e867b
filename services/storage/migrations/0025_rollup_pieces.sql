-- The invalidation log carries each batch's own aggregate of the minutes it touched (a
-- "piece": the rows that batch really inserted, aggregated as readings_1m aggregates a
-- minute). The fold merges a minute's pieces with its stored row when they do not overlap
-- in measured time, and aggregates the minute's raw readings again only when they do
-- (late data between stored readings). Rows logged before this migration carry no piece
-- (n is null): the fold aggregates their minutes from raw readings, as it did.
ALTER TABLE rollup_dirty
    ADD COLUMN IF NOT EXISTS n integer,
    ADD COLUMN IF NOT EXISTS sum double precision,
    ADD COLUMN IF NOT EXISTS min double precision,
    ADD COLUMN IF NOT EXISTS max double precision,
    ADD COLUMN IF NOT EXISTS first_ts timestamptz,
    ADD COLUMN IF NOT EXISTS last_ts timestamptz,
    ADD COLUMN IF NOT EXISTS first_value double precision,
    ADD COLUMN IF NOT EXISTS last_value double precision,
    ADD COLUMN IF NOT EXISTS first_text text,
    ADD COLUMN IF NOT EXISTS last_text text,
    -- Counter steps between the piece's consecutive readings, whatever the metric's kind:
    -- the fold keeps them for counters only (it reads the kind from the registry).
    ADD COLUMN IF NOT EXISTS steps double precision,
    ADD COLUMN IF NOT EXISTS state_counts jsonb;
