-- The one home of the availability mark rule. A device with a reading or a status message
-- at or before the availability job's settled horizon is marked for the job to recompute
-- from the earliest such time; each mark counts up, so the job removes only the marks it
-- processed and a mark made while it worked stays for its next run. Called by ingest's
-- batches (storage/rollups.record_dirty, late readings), the status trigger below (status
-- messages) and the job itself (every device from its old horizon, storage/availability.py).
CREATE FUNCTION mark_availability(marked_devices text[], marked_since timestamptz[])
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO availability_dirty AS a (device_id, from_ts)
    SELECT m.device_id, min(m.since)
    FROM unnest(marked_devices, marked_since) AS m(device_id, since)
    JOIN availability_progress p ON p.settled_to IS NOT NULL AND m.since <= p.settled_to
    GROUP BY m.device_id
    ORDER BY m.device_id
    ON CONFLICT (device_id) DO UPDATE
    SET from_ts = least(a.from_ts, excluded.from_ts), marks = a.marks + 1
$$;

CREATE OR REPLACE FUNCTION record_status_event() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO device_status_events (device_id, ts, online)
    VALUES (NEW.device_id, NEW.status_ts, NEW.online)
    ON CONFLICT DO NOTHING;
    PERFORM mark_availability(ARRAY[NEW.device_id], ARRAY[NEW.status_ts]);
    RETURN NULL;
END
$$;
