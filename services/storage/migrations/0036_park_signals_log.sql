-- The live park signals as the elected publisher computed them (services/maintenance/
-- sharing.py), one row per park and minute: the last computation in the minute wins.
-- They are the body of GET /v1/parks/{id}/signals, kept for readers that take the data
-- from the database (the Grafana dashboard, deploy/grafana) without computing any signal
-- a second way.
CREATE TABLE park_signals_1m (
    park_id                       text NOT NULL,
    minute                        timestamptz NOT NULL,
    as_of                         timestamptz NOT NULL,
    window_s                      double precision NOT NULL,
    health_index                  double precision,
    online_rate                   double precision,
    operating_rate                double precision,
    capacity_utilization          double precision,
    power_kw                      double precision,
    energy_kwh                    double precision,
    energy_intensity_kwh_per_unit double precision,
    alarm_rate                    double precision,
    devices_registered            integer NOT NULL,
    devices_online                integer NOT NULL,
    devices_in_alarm              integer NOT NULL,
    factories_with_lines          integer NOT NULL,
    factories_operating           integer NOT NULL,
    -- The alarms behind alarm_rate: [{device_id, factory_id, metric, reason, ts, …}].
    alarms                        jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (park_id, minute)
);
SELECT create_hypertable('park_signals_1m', 'minute', chunk_time_interval => interval '7 days');
