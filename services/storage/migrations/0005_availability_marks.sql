-- Each mark of a device for the availability job counts up, so the job removes only the
-- marks it has processed and a mark made while it worked stays for its next run.
ALTER TABLE availability_dirty ADD COLUMN marks bigint NOT NULL DEFAULT 1;

CREATE OR REPLACE FUNCTION record_status_event() RETURNS trigger
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
    ON CONFLICT (device_id) DO UPDATE
    SET from_ts = least(d.from_ts, excluded.from_ts), marks = d.marks + 1;
    RETURN NULL;
END
$$;
