-- Roll-ups behind the park signals, online-state history, and their helper functions.
--
-- The Apache edition of TimescaleDB has no continuous aggregates, so ingest maintains these
-- tables itself, inside each batch's transaction, from the rows the batch actually inserted
-- (services/storage/rollups.py). docs/signals.md defines every column.

-- What one reading adds to a counter after the previous one: a drop means the counter
-- restarted from zero, so the whole new value is increase (PRODUCT.md). No previous: null.
CREATE FUNCTION counter_step(previous double precision, current double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN previous IS NULL THEN NULL
                  WHEN current >= previous THEN current - previous
                  ELSE current END $$;

-- Adds two {"state": samples} objects key by key (plpgsql: called once per updated row,
-- where a SQL function with a subquery costs several times more).
CREATE FUNCTION merge_state_counts(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    state text;
    samples text;
    merged jsonb := a;
BEGIN
    IF a IS NULL THEN
        RETURN b;
    END IF;
    IF b IS NULL THEN
        RETURN a;
    END IF;
    FOR state, samples IN SELECT key, value FROM jsonb_each_text(b) LOOP
        merged := jsonb_set(
            merged, ARRAY[state], to_jsonb(coalesce((merged ->> state)::bigint, 0) + samples::bigint)
        );
    END LOOP;
    RETURN merged;
END
$$;

-- One row per device, metric and minute [minute, minute + 1 min) with at least one reading.
CREATE TABLE readings_1m (
    device_id     text NOT NULL,
    metric        text NOT NULL,
    minute        timestamptz NOT NULL,
    n             integer NOT NULL,           -- readings in the minute
    sum           double precision,           -- numeric metrics only
    min           double precision,
    max           double precision,
    first_ts      timestamptz NOT NULL,
    last_ts       timestamptz NOT NULL,
    first_value   double precision,
    last_value    double precision,
    first_text    text,                       -- state metrics only
    last_text     text,
    -- Counters only: the steps between readings inside the minute, and the step from the
    -- last reading before the minute to the first one in it (null when there is none).
    -- Their sum is the minute's increase; the sum over a bucket's minutes is the bucket's.
    inc_within    double precision,
    inc_from_prev double precision,
    state_counts  jsonb,                      -- state metrics only: {"running": 57, "idle": 3}
    PRIMARY KEY (device_id, metric, minute)
);
-- The primary key serves every query; a second index would only slow ingest.
SELECT create_hypertable('readings_1m', 'minute', chunk_time_interval => interval '7 days',
                         create_default_indexes => false);

-- One row per park and minute: the sums behind the history of its signals (see
-- docs/signals.md, "Per minute"). Recomputed from readings_1m for every minute a batch
-- touches, with the registry of that moment.
CREATE TABLE park_1m (
    park_id                 text NOT NULL,
    minute                  timestamptz NOT NULL,
    devices_reporting       integer NOT NULL,
    lines_reporting_state   integer NOT NULL,
    lines_running           integer NOT NULL,
    factories_operating     integer NOT NULL,
    lines_reporting_output  integer NOT NULL,
    output_units            double precision NOT NULL,
    meters_reporting_power  integer NOT NULL,
    power_kw                double precision NOT NULL,
    energy_reporting        integer NOT NULL,
    energy_kwh              double precision NOT NULL,
    alarm_devices_reporting integer NOT NULL,
    devices_in_alarm        integer NOT NULL,
    PRIMARY KEY (park_id, minute)
) WITH (fillfactor = 80);
SELECT create_hypertable('park_1m', 'minute', chunk_time_interval => interval '30 days',
                         create_default_indexes => false);

-- Every status message that moved a device's retained status (device_status is the lead's
-- table and keeps only the newest; this keeps the history the availability needs).
CREATE TABLE device_status_events (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    online      boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts, online)
);

-- Online/offline transitions, materialised by the availability job up to settled_to.
CREATE TABLE device_availability (
    device_id text NOT NULL,
    ts        timestamptz NOT NULL,
    online    boolean NOT NULL,
    reason    text NOT NULL
        CHECK (reason IN ('reading', 'status', 'last_will', 'silence', 'clean_disconnect')),
    PRIMARY KEY (device_id, ts)
);

-- How far device_availability is final, and with which timeout it was computed.
CREATE TABLE availability_progress (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    settled_to timestamptz,
    timeout_s  double precision
);
INSERT INTO availability_progress (id) VALUES (true);

-- Devices whose late readings or status messages landed before settled_to: the job
-- recomputes their transitions from from_ts on.
CREATE TABLE availability_dirty (
    device_id text PRIMARY KEY,
    from_ts   timestamptz NOT NULL
);

CREATE FUNCTION record_status_event() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO device_status_events (device_id, ts, online)
    VALUES (NEW.device_id, NEW.status_ts, NEW.online)
    ON CONFLICT DO NOTHING;
    INSERT INTO availability_dirty AS d (device_id, from_ts)
    SELECT NEW.device_id, NEW.status_ts
    FROM availability_progress p
    WHERE p.settled_to IS NOT NULL AND NEW.status_ts <= p.settled_to
    ON CONFLICT (device_id) DO UPDATE SET from_ts = least(d.from_ts, excluded.from_ts);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_status_event_on_insert
AFTER INSERT ON device_status
FOR EACH ROW
WHEN (NEW.status_ts IS NOT NULL AND NEW.online IS NOT NULL)
EXECUTE FUNCTION record_status_event();

CREATE TRIGGER device_status_event_on_update
AFTER UPDATE OF online, status_ts ON device_status
FOR EACH ROW
WHEN (
    NEW.status_ts IS NOT NULL AND NEW.online IS NOT NULL
    AND (NEW.status_ts IS DISTINCT FROM OLD.status_ts OR NEW.online IS DISTINCT FROM OLD.online)
)
EXECUTE FUNCTION record_status_event();
