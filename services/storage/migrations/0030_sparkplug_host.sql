-- The Sparkplug B host's state (services/core/sparkplug.py): one row per edge node (a
-- factory's gateway), read and written under a row lock in the transaction that stores the
-- readings of its messages, so that every ingest worker sees the births any worker stored.
CREATE TABLE sparkplug_nodes (
    park_id    text NOT NULL,
    factory_id text NOT NULL,
    -- The bdSeq of the NBIRTH in force; NULL while none is (never born, or dead).
    bd_seq     smallint CHECK (bd_seq BETWEEN 0 AND 255),
    -- The newest seq seen, and which of the 32 before it have arrived (bit i: seq - i).
    seq        smallint CHECK (seq BETWEEN 0 AND 255),
    seen       bigint NOT NULL CHECK (seen BETWEEN 0 AND 4294967295),
    rebirth_at timestamptz,
    -- Each born device's DBIRTH: {"device": {"born_at": "…", "seq": 1, "aliases":
    -- {"1": "power_kw"}, "datatypes": {"power_kw": 10}}}; at most MAX_METRICS aliases each.
    devices    jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (park_id, factory_id)
);

-- What last moved a device's announced online state: a status message, or a Sparkplug
-- birth or death (NULL for rows written before this migration).
ALTER TABLE device_status ADD COLUMN status_reason text
    CHECK (status_reason IN ('status', 'birth', 'death'));
