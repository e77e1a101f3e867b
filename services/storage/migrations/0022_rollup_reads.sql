-- Reads of readings_1m: the seam to roll-up maintenance.
--
-- rollup_unfolded(device, metric, start, end) answers the spans of [start, end) whose
-- readings of that device metric may not all be folded into readings_1m yet (hi null or
-- 'infinity': open-ended, as a watermark is). A read of
-- buckets (services/storage/device_readings.py) takes from readings_1m only the whole
-- minutes outside these spans and reads the rest from raw readings, so an answer is exact
-- whether or not the fold has caught up with the last commits.
--
-- Here ingest folds every batch into readings_1m inside the batch's own transaction, so
-- nothing committed is ever unfolded and the function answers no span. Maintenance that
-- folds after the commit (a watermark, pending (device, minute) keys) replaces this one
-- function with CREATE OR REPLACE in a later migration, for example:
--   SELECT watermark, 'infinity' FROM rollup_progress
--   UNION ALL SELECT minute, minute + interval '1 minute' FROM rollup_pending
--   WHERE device_id = $1 AND minute >= $3 - interval '1 minute' AND minute < $4
-- Nothing else reads the fold's progress.
CREATE FUNCTION rollup_unfolded(
    device_id text, metric text, start_ts timestamptz, end_ts timestamptz
)
RETURNS TABLE (lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULL::timestamptz, NULL::timestamptz WHERE false $$;
