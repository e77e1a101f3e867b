-- readings carried two B-trees: its primary key (device_id, metric, ts), which every read
-- by device uses, and TimescaleDB's default time index (ts DESC), which only the
-- availability job's scan of every device's recent minutes used (availability
-- _RAW_BY_TIME). Ingest paid for both on every stored reading; the time B-tree was about
-- a quarter of a COPY's cost (1.3-3.9 us a row measured against the primary key alone).
-- A BRIN index answers the same time-range scan: ingest appends rows roughly in time
-- order, so each 128-page range holds a narrow span of ts, and widening a range's summary
-- costs next to nothing. Ranges not summarised yet (the newest) are always read, which is
-- exactly the recent data that scan asks for; autosummarize summarises each range as it
-- fills. Closed chunks clustered by device (chunk_order.py) lose the ordering, and only
-- reads by device (the primary key) go there.
DROP INDEX IF EXISTS readings_ts_idx;
CREATE INDEX readings_ts_brin ON readings USING brin (ts) WITH (autosummarize = on);
