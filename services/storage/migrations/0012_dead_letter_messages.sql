-- Dead letters cost about the refused message's own size, however much of it was refused.
--
-- dead_letter_messages holds each refused message once, as it arrived. dead_letters holds
-- one row per reason refused in that message (services/core/deadletters.py groups them):
-- how many readings, samples or messages it refused (`refused`), the first refused
-- metrics, a bounded detail. A 2,000-metric sample with every metric unknown was 2,000
-- rows each with the whole sample; it is now one message and one row.
CREATE TABLE dead_letter_messages (
    message_id  bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    payload     bytea                        -- null when the refusal came from the database
);
CREATE INDEX dead_letter_messages_received_idx ON dead_letter_messages (received_at);

ALTER TABLE dead_letters
    ADD COLUMN message_id bigint REFERENCES dead_letter_messages ON DELETE CASCADE,
    ADD COLUMN refused    integer NOT NULL DEFAULT 1 CHECK (refused >= 1),
    ADD COLUMN metrics    text[] NOT NULL DEFAULT '{}';

-- Rows written before this migration: each distinct (received_at, topic, payload) becomes
-- a message; every old row stays one row of its own (refused = 1), as it was counted.
CREATE TEMP TABLE dead_letter_message_map ON COMMIT DROP AS
SELECT nextval('dead_letter_messages_message_id_seq') AS message_id, received_at, topic, payload
FROM (SELECT DISTINCT received_at, topic, payload FROM dead_letters) AS distinct_messages;

INSERT INTO dead_letter_messages (message_id, received_at, payload)
SELECT message_id, received_at, payload FROM dead_letter_message_map;

UPDATE dead_letters d
SET message_id = m.message_id,
    metrics = CASE WHEN d.metric IS NULL THEN '{}' ELSE ARRAY[d.metric] END
FROM dead_letter_message_map m
WHERE d.received_at = m.received_at
  AND d.topic = m.topic
  AND d.payload IS NOT DISTINCT FROM m.payload;

ALTER TABLE dead_letters
    ALTER COLUMN message_id SET NOT NULL,
    DROP COLUMN payload;

-- ON DELETE CASCADE from the retention job finds a message's rows through this index.
CREATE INDEX dead_letters_message_idx ON dead_letters (message_id);

-- The retention job deletes delivery minutes by time (services/storage/retention.py).
CREATE INDEX delivery_1m_minute_idx ON delivery_1m (minute);
