-- A device metric's readings per quarter hour, summed from readings_1m, so that a device's
-- readings over weeks at 15 min or more read a fifteenth of the rows (43,200 minutes of 30
-- days are 2,880 quarters; docs/signals.md, "A device's readings"). Kept by the fold in the
-- transaction that writes the minutes (services/storage/rollups.py), so a quarter whose
-- minutes are all folded is exact. Quarters start on the UTC quarter-hour grid, which
-- every time zone's offset keeps (they are whole quarters of an hour).
CREATE TABLE readings_15m (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    quarter     timestamptz NOT NULL,
    n           integer NOT NULL,
    sum         double precision,
    min         double precision,
    max         double precision,
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL,
    first_value double precision,
    last_value  double precision,
    first_text  text,
    last_text   text,
    PRIMARY KEY (device_id, metric, quarter)
) WITH (fillfactor = 90);  -- the current quarter is rewritten by every fold
SELECT create_hypertable('readings_15m', 'quarter', chunk_time_interval => interval '28 days',
                         create_default_indexes => false);

-- The quarters of what readings_1m holds, a day at a time (a month of a large fleet is a
-- hundred million minutes: aggregated at once, the hash table would spill to disk).
SET LOCAL work_mem = '64MB';
DO $$
DECLARE
    day timestamptz;
BEGIN
    -- The days the chunks of readings_1m span (read from the catalogue, not the rows).
    FOR day IN
        SELECT generate_series(time_bucket(interval '1 day', min(range_start)),
                               max(range_end) - interval '1 microsecond', interval '1 day')
        FROM timescaledb_information.chunks
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings_1m'
    LOOP
        INSERT INTO readings_15m
        SELECT device_id, metric, time_bucket(interval '15 minutes', minute), sum(n)::integer,
               sum(sum), min(min), max(max), min(first_ts), max(last_ts),
               first(first_value, first_ts), last(last_value, last_ts),
               first(first_text, first_ts), last(last_text, last_ts)
        FROM readings_1m
        WHERE minute >= day AND minute < day + interval '1 day'
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3;
    END LOOP;
END
$$;
