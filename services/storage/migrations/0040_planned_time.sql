-- Planned time (docs/signals.md, "Planned time"): a park's IANA time zone and its
-- calendar, and a factory's own calendar that replaces its park's. A calendar is the fleet
-- file's {"shifts": [...], "holidays": [...]} as validated by schemas.fleet.Calendar;
-- null means none (a factory with no calendar and no park calendar is always scheduled).
ALTER TABLE parks
    ADD COLUMN timezone text NOT NULL DEFAULT 'Asia/Shanghai',
    ADD COLUMN calendar jsonb;
ALTER TABLE factories ADD COLUMN calendar jsonb;
