-- Chinese names of parks and factories (fleet file `name_zh`), shown by the dashboard when
-- it is in Chinese. Empty when the fleet gives none: readers fall back to `name`.
ALTER TABLE parks ADD COLUMN name_zh text NOT NULL DEFAULT '';
ALTER TABLE factories ADD COLUMN name_zh text NOT NULL DEFAULT '';
