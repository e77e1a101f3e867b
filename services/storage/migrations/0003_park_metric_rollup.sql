-- Per-minute roll-up of every metric over a park's devices, for park metric aggregates.
--
-- Maintained with park_1m (services/storage/rollups.py), from readings_1m and the registry:
-- one row per park, metric and minute in which at least one of the park's devices sent it.
CREATE TABLE park_metric_1m (
    park_id      text NOT NULL,
    metric       text NOT NULL,
    minute       timestamptz NOT NULL,
    devices      integer NOT NULL,            -- devices with readings of the metric
    n            integer NOT NULL,            -- readings
    sum          double precision,            -- numeric metrics: over all readings
    min          double precision,
    max          double precision,
    mean_sum     double precision,            -- sum over devices of each one's mean
    increase     double precision,            -- counters: sum of the devices' increases
    state_counts jsonb,                       -- state metrics: samples per state
    PRIMARY KEY (park_id, metric, minute)
) WITH (fillfactor = 80);  -- the current minute is rewritten by every batch
SELECT create_hypertable('park_metric_1m', 'minute', chunk_time_interval => interval '30 days',
                         create_default_indexes => false);
