-- Hourly sums of park_1m, so that history over months reads hours rather than minutes.
-- Every column is a sum of park_1m's over the hour; recomputed from park_1m for each hour
-- whose minutes a batch touched (services/storage/rollups.py).
CREATE TABLE park_1h (
    park_id                 text NOT NULL,
    hour                    timestamptz NOT NULL,
    minutes                 integer NOT NULL,      -- park minutes with data in the hour
    devices_reporting       bigint NOT NULL,
    lines_reporting_state   bigint NOT NULL,
    lines_running           bigint NOT NULL,
    factories_operating     bigint NOT NULL,
    lines_reporting_output  bigint NOT NULL,
    output_units            double precision NOT NULL,
    meters_reporting_power  bigint NOT NULL,
    power_kw                double precision NOT NULL,
    energy_reporting        bigint NOT NULL,
    energy_kwh              double precision NOT NULL,
    alarm_devices_reporting bigint NOT NULL,
    devices_in_alarm        bigint NOT NULL,
    PRIMARY KEY (park_id, hour)
) WITH (fillfactor = 80);  -- the current hour is rewritten by every batch
SELECT create_hypertable('park_1h', 'hour', chunk_time_interval => interval '365 days',
                         create_default_indexes => false);
