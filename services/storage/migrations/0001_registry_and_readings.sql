-- Registry, readings hypertable, device state and dead letters.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE device_types (
    type_id     text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    attributes  text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE device_type_metrics (
    type_id      text NOT NULL REFERENCES device_types ON DELETE CASCADE,
    metric       text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('gauge', 'counter', 'state')),
    unit         text NOT NULL DEFAULT '',
    min_value    double precision,
    max_value    double precision,
    alarm_min    double precision,
    alarm_max    double precision,
    states       text[],
    alarm_states text[],
    PRIMARY KEY (type_id, metric)
);

CREATE TABLE parks (
    park_id text PRIMARY KEY,
    name    text NOT NULL DEFAULT '',
    city    text NOT NULL DEFAULT ''
);
CREATE INDEX parks_city_idx ON parks (city);

CREATE TABLE factories (
    factory_id text PRIMARY KEY,
    park_id    text NOT NULL REFERENCES parks ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    industry   text NOT NULL DEFAULT ''
);
CREATE INDEX factories_park_idx ON factories (park_id);

CREATE TABLE devices (
    device_id               text PRIMARY KEY,
    factory_id              text NOT NULL REFERENCES factories ON DELETE CASCADE,
    park_id                 text NOT NULL REFERENCES parks ON DELETE CASCADE,
    type_id                 text NOT NULL REFERENCES device_types,
    capacity_units_per_hour double precision,
    -- Per-device alarm thresholds overriding the type's: {"temp_c": {"min": 5, "max": 35}}.
    thresholds              jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX devices_park_idx ON devices (park_id);

-- Every fleet load bumps the version; ingest polls it to refresh its registry cache.
CREATE TABLE fleet_versions (
    version   bigserial PRIMARY KEY,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    parks     integer NOT NULL,
    factories integer NOT NULL,
    devices   integer NOT NULL
);

-- One row per reading; its identity is (device_id, metric, ts), so redelivery is idempotent.
-- A state metric keeps its value in value_text; every other kind in value.
CREATE TABLE readings (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    value_text  text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day');

-- Latest value per device and metric; only moves forward in measured time.
CREATE TABLE device_latest (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    value_text  text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric)
);

-- Online state per device: the last status message and the newest measured time seen.
CREATE TABLE device_status (
    device_id    text PRIMARY KEY,
    online       boolean,
    status_ts    timestamptz,
    last_seen_ts timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Refused readings and messages, each with a machine-readable reason.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    topic       text NOT NULL DEFAULT '',
    park_id     text,
    device_id   text,
    metric      text,
    ts          timestamptz,
    payload     bytea
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at DESC);
CREATE INDEX dead_letters_device_idx ON dead_letters (device_id, received_at DESC);
