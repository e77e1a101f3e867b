-- The seam of 0022 wired to the fold of 0021: a device metric's minutes still in the
-- invalidation log (rollup_dirty) are not folded into readings_1m yet, so reads of
-- buckets take them from raw readings. The fold deletes a key and rewrites its minute in
-- one transaction, and a read calls this function inside its own statement, so every
-- read sees a minute either folded or listed here, never neither.
CREATE OR REPLACE FUNCTION rollup_unfolded(
    device_id text, metric text, start_ts timestamptz, end_ts timestamptz
)
RETURNS TABLE (lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT DISTINCT d.minute, d.minute + interval '1 minute'
    FROM rollup_dirty d
    WHERE d.device_id = rollup_unfolded.device_id
      AND d.metric = rollup_unfolded.metric
      AND d.minute >= start_ts - interval '1 minute'
      AND d.minute < end_ts
$$;
