-- Which factories operated in each park minute, so that planned-time history counts a
-- factory's operating minutes only inside its shifts (docs/signals.md, "Planned time").
-- Minutes folded before this migration have none and count as the roll-up's number.
ALTER TABLE park_1m ADD COLUMN operating_factories text[];
