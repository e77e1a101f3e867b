-- Per-park delivery accounting per minute of receipt: readings accepted by validation and
-- readings actually stored (the difference is duplicates). Refusals are in dead_letters.
CREATE TABLE delivery_1m (
    park_id  text NOT NULL,
    minute   timestamptz NOT NULL,
    accepted bigint NOT NULL DEFAULT 0,
    stored   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (park_id, minute)
);
CREATE INDEX dead_letters_park_idx ON dead_letters (park_id, received_at DESC);
