-- Each park hour's operating minutes per factory, so that planned-time history over months
-- reads hours rather than every park minute (docs/signals.md, "Planned time"). Testing each
-- minute's operating factories against their shifts cost ~2 s for 30 days of a 40-factory
-- park; a whole hour inside (or outside) a factory's shifts counts its minutes from here,
-- and only hours a shift begins or ends inside are read minute by minute.
-- {"f1": 60, "f2": 12}: the factory operated in that many minutes of the hour. NULL when a
-- minute of the hour was folded before park_1m kept its operating factories (0041): such an
-- hour is read from its minutes.
ALTER TABLE park_1h ADD COLUMN factory_operating_minutes jsonb;

WITH per_factory AS (
    SELECT m.park_id, time_bucket(interval '1 hour', m.minute) AS hour, f.factory_id,
           count(*)::integer AS minutes
    FROM park_1m m
    CROSS JOIN LATERAL unnest(m.operating_factories) AS f(factory_id)
    GROUP BY 1, 2, 3
), per_hour AS (
    SELECT park_id, hour, jsonb_object_agg(factory_id, minutes) AS by_factory
    FROM per_factory
    GROUP BY 1, 2
), complete AS (
    SELECT park_id, time_bucket(interval '1 hour', minute) AS hour
    FROM park_1m
    GROUP BY 1, 2
    HAVING bool_and(operating_factories IS NOT NULL)
)
UPDATE park_1h h
SET factory_operating_minutes = coalesce(p.by_factory, '{}')
FROM complete c
LEFT JOIN per_hour p USING (park_id, hour)
WHERE h.park_id = c.park_id AND h.hour = c.hour;
