"""Per-minute roll-ups: ingest logs each batch's partial aggregates, maintenance folds them.

Inside the writer's transaction, the batch appends to ``rollup_dirty`` (the invalidation
log) one *piece* per (device, metric, minute) it touched: the rows it actually inserted,
aggregated as ``readings_1m`` holds a minute — made in ingest for a batch of new readings
(``record_summary``, from ``core.batch_summary``), in SQL from ``fresh_readings`` after a
conflict (``record_dirty``); no lock, and no row another writer could hold. About once a
second ``fold`` (run by ``services.maintenance``, one fold at a time) takes the committed
pieces, and every few seconds vacuums the log it empties (``vacuum_log``):

```
rollup_dirty ─DELETE…RETURNING─▶ fold_pieces
fold_pieces + the stored minute, in time order:
    no overlap ─▶ merged (counts add, min/max widen, first/last, counter steps at the seams)
    overlap    ─▶ fold_keys ─▶ aggregated again from every raw reading of the minute
merged and re-aggregated minutes ─▶ replace readings_1m; their readings_15m quarters merged
    with the pieces, or (a minute aggregated again) summed again from readings_1m
readings_1m counters ─▶ re-stitch inc_from_prev of folded minutes and the next stored one
folded minutes ─▶ recompute park_1m and park_metric_1m of their parks (registry joined)
folded hours ─▶ recompute park_1h from park_1m
```

Only inserted rows are logged, so a redelivered reading never counts twice. Pieces that do
not overlap in measured time hold disjoint readings, so merging them is exact; a reading
counted in two pieces (or in a stored minute and a piece) makes them overlap at its
timestamp, so the minute is then aggregated from raw rows instead. A fold that dies
half-way (its transaction rolls back, the pieces stay) and runs again doubles nothing.
Readers needing minutes the fold has not reached yet read them raw (``rollup_dirty`` says
which).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from services.core.batch_summary import BatchSummary
from services.core.signals import sql_parameters
from services.storage.arrays import text_array, timestamptz_array
from services.storage.copying import copy_rows

logger = logging.getLogger(__name__)

# Transaction-level advisory lock of roll-up maintenance ("rlup"); any constant works as
# long as every parksense process uses the same one.
ROLLUP_LOCK_KEY = 0x726C7570

# The words of the signal vocabulary, the metric kinds and the alarm rule, bound into the
# statements below as %(name)s parameters, so none is typed again in SQL.
_VOCABULARY = sql_parameters()

_SETUP_SQL = """
CREATE TEMP TABLE IF NOT EXISTS fresh_1m (
    device_id text, metric text, minute timestamptz, is_counter boolean, n integer,
    sum double precision, min double precision, max double precision,
    first_ts timestamptz, last_ts timestamptz, first_value double precision,
    last_value double precision, first_text text, last_text text,
    inc_within double precision, state_counts jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_minutes (
    device_id text, minute timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_keys (
    device_id text, metric text, minute timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS fold_pieces (
    device_id text, metric text, minute timestamptz, n integer, sum double precision,
    min double precision, max double precision, first_ts timestamptz, last_ts timestamptz,
    first_value double precision, last_value double precision, first_text text,
    last_text text, steps double precision, state_counts jsonb
) ON COMMIT DELETE ROWS;
"""

# Aggregates readings of ``{source}`` (a relation with device_id, metric, ts, value,
# value_text) per device, metric and minute, as readings_1m holds them. ``steps`` is the
# sum of counter steps between consecutive readings inside the minute, whatever the kind:
# the minute's inc_within when the metric is a counter. ``{kinds}`` joins the registry for
# ``{is_counter}``; ingest's pieces leave both out (the fold looks the kind up once per key).
_AGGREGATE = """
WITH f AS (
    SELECT s.device_id, s.metric, s.ts, s.value, s.value_text,
           time_bucket(interval '1 minute', s.ts) AS minute,
           {is_counter} AS is_counter
    FROM {source} s
    {kinds}
    {where}
), per_minute AS (
    -- Grouped in the window's sort order, so the rows are sorted once.
    SELECT device_id, metric, minute, bool_or(is_counter) AS is_counter,
           count(*)::integer AS n, sum(value) AS sum, min(value) AS min, max(value) AS max,
           min(ts) AS first_ts, max(ts) AS last_ts,
           first(value, ts) AS first_value, last(value, ts) AS last_value,
           first(value_text, ts) AS first_text, last(value_text, ts) AS last_text,
           coalesce(sum(step), 0) AS steps
    FROM (
        SELECT f.*,
               counter_step(
                   lag(f.value) OVER (PARTITION BY f.device_id, f.metric, f.minute ORDER BY f.ts),
                   f.value
               ) AS step
        FROM f
    ) stepped
    GROUP BY device_id, metric, minute
), states AS (
    SELECT device_id, metric, minute, jsonb_object_agg(value_text, c ORDER BY value_text) AS counts
    FROM (
        SELECT device_id, metric, minute, value_text, count(*) AS c
        FROM f WHERE value_text IS NOT NULL
        GROUP BY device_id, metric, minute, value_text
    ) per_state
    GROUP BY device_id, metric, minute
)
SELECT p.device_id, p.metric, p.minute, p.is_counter, p.n, p.sum, p.min, p.max,
       p.first_ts, p.last_ts, p.first_value, p.last_value, p.first_text, p.last_text,
       p.steps, st.counts AS state_counts
FROM per_minute p
LEFT JOIN states st USING (device_id, metric, minute)
"""

_KINDS = """LEFT JOIN devices d ON d.device_id = s.device_id
    LEFT JOIN device_type_metrics k ON k.type_id = d.type_id AND k.metric = s.metric"""


def _minutes(source: str, where: str = "") -> str:
    """The minutes of ``source`` as readings_1m rows (``inc_within`` for counters only)."""
    aggregate = _AGGREGATE.format(
        source=source,
        where=where,
        kinds=_KINDS,
        is_counter="coalesce(k.kind = %(counter_kind)s, false)",
    )
    return f"""
    SELECT device_id, metric, minute, is_counter, n, sum, min, max, first_ts, last_ts,
           first_value, last_value, first_text, last_text,
           CASE WHEN is_counter THEN steps END AS inc_within, state_counts
    FROM ({aggregate}) a
    """


_COLUMNS = (
    "device_id, metric, minute, is_counter, n, sum, min, max, first_ts, last_ts, first_value,"
    " last_value, first_text, last_text, inc_within, state_counts"
)
_PIECE_COLUMNS = (
    "device_id, metric, minute, n, sum, min, max, first_ts, last_ts, first_value,"
    " last_value, first_text, last_text, steps, state_counts"
)

# The minutes the fold cannot merge from pieces, aggregated again from every raw reading
# they hold: exact whatever order, duplicates or late data the batches brought, and
# idempotent, so a fold that is interrupted and run again changes nothing twice.
_AGGREGATE_DIRTY = f"INSERT INTO fresh_1m ({_COLUMNS}) " + _minutes(
    """(
        SELECT k.device_id, k.metric, r.ts, r.value, r.value_text
        FROM fold_keys k
        CROSS JOIN LATERAL (
            SELECT r.ts, r.value, r.value_text FROM readings r
            WHERE r.device_id = k.device_id AND r.metric = k.metric
              AND r.ts >= k.minute AND r.ts < k.minute + interval '1 minute'
            OFFSET 0  -- a range scan per key, never a hash join over every raw row
        ) r
    )"""
)

# Replaces each dirty minute; inc_from_prev is re-stitched below.
_REPLACE = """
INSERT INTO readings_1m AS r (
    device_id, metric, minute, n, sum, min, max, first_ts, last_ts, first_value,
    last_value, first_text, last_text, inc_within, inc_from_prev, state_counts
)
SELECT device_id, metric, minute, n, sum, min, max, first_ts, last_ts, first_value,
       last_value, first_text, last_text, inc_within, NULL, state_counts
FROM fresh_1m
ORDER BY device_id, metric, minute
ON CONFLICT (device_id, metric, minute) DO UPDATE SET
    n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
    first_ts = excluded.first_ts, last_ts = excluded.last_ts,
    first_value = excluded.first_value, last_value = excluded.last_value,
    first_text = excluded.first_text, last_text = excluded.last_text,
    inc_within = excluded.inc_within, state_counts = excluded.state_counts
"""

# A quarter's columns from the rows it combines (minutes, or pieces), as readings_15m holds them.
_QUARTER_AGGREGATES = (
    "sum(n)::integer AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,"
    " min(first_ts) AS first_ts, max(last_ts) AS last_ts,"
    " first(first_value, first_ts) AS first_value, last(last_value, last_ts) AS last_value,"
    " first(first_text, first_ts) AS first_text, last(last_text, last_ts) AS last_text"
)

# readings_15m: each quarter hour ``{quarters}`` yields (device_id, metric, quarter) summed
# again from its minutes in readings_1m (at most 15 rows, read by a range lookup per key).
_QUARTER_SUMS = """
INSERT INTO readings_15m AS q (
    device_id, metric, quarter, n, sum, min, max, first_ts, last_ts, first_value,
    last_value, first_text, last_text
)
SELECT k.device_id, k.metric, k.quarter, a.n, a.sum, a.min, a.max, a.first_ts, a.last_ts,
       a.first_value, a.last_value, a.first_text, a.last_text
FROM ({quarters}) k
CROSS JOIN LATERAL (
    SELECT {aggregates}
    FROM readings_1m r
    WHERE r.device_id = k.device_id AND r.metric = k.metric
      AND r.minute >= k.quarter AND r.minute < k.quarter + interval '15 minutes'
) a
WHERE a.n IS NOT NULL
ORDER BY k.device_id, k.metric, k.quarter
ON CONFLICT (device_id, metric, quarter) DO UPDATE SET
    n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
    first_ts = excluded.first_ts, last_ts = excluded.last_ts,
    first_value = excluded.first_value, last_value = excluded.last_value,
    first_text = excluded.first_text, last_text = excluded.last_text
"""

# The quarters of the minutes a fold aggregated again from raw rows (fold_keys).
_QUARTERS_RESUMMED = _QUARTER_SUMS.format(
    quarters="SELECT DISTINCT device_id, metric,"
    " time_bucket(interval '15 minutes', minute) AS quarter FROM fold_keys",
    aggregates=_QUARTER_AGGREGATES,
)

# The quarters of the minutes merged from their pieces (and of no minute in fold_keys):
# a merged minute holds its stored readings and its pieces' (minutes only grow), and the
# pieces hold none the quarter holds already, so the quarter merges with the pieces as a
# minute does: counts and sums add, min/max widen, first/last from the earlier/later. No
# stored minute is read again (re-summing every touched quarter from readings_1m cost
# about 5 us a stored reading, the fold's second-largest statement).
_QUARTERS_MERGED = f"""
WITH resummed AS (
    SELECT DISTINCT device_id, metric, time_bucket(interval '15 minutes', minute) AS quarter
    FROM fold_keys
)
INSERT INTO readings_15m AS q (
    device_id, metric, quarter, n, sum, min, max, first_ts, last_ts, first_value,
    last_value, first_text, last_text
)
SELECT p.device_id, p.metric, p.quarter, {_QUARTER_AGGREGATES}
FROM (
    SELECT {_PIECE_COLUMNS}, time_bucket(interval '15 minutes', minute) AS quarter
    FROM fold_pieces
    WHERE n IS NOT NULL
) p
LEFT JOIN resummed r USING (device_id, metric, quarter)
WHERE r.quarter IS NULL
GROUP BY p.device_id, p.metric, p.quarter
ORDER BY p.device_id, p.metric, p.quarter
ON CONFLICT (device_id, metric, quarter) DO UPDATE SET
    n = q.n + excluded.n,
    sum = q.sum + excluded.sum,
    min = least(q.min, excluded.min),
    max = greatest(q.max, excluded.max),
    first_ts = least(q.first_ts, excluded.first_ts),
    last_ts = greatest(q.last_ts, excluded.last_ts),
    first_value = CASE WHEN excluded.first_ts < q.first_ts
                       THEN excluded.first_value ELSE q.first_value END,
    first_text = CASE WHEN excluded.first_ts < q.first_ts
                      THEN excluded.first_text ELSE q.first_text END,
    last_value = CASE WHEN excluded.last_ts > q.last_ts
                      THEN excluded.last_value ELSE q.last_value END,
    last_text = CASE WHEN excluded.last_ts > q.last_ts
                     THEN excluded.last_text ELSE q.last_text END
"""

# inc_from_prev of a counter minute is the step from the previous stored minute's last
# value to its first value. A batch changes it for the minutes it touched and for the next
# stored minute after them; the window below spans exactly those rows.
_STITCH = """
WITH keys AS (
    SELECT device_id, metric, min(minute) AS lo, max(minute) AS hi
    FROM {keys_source}
    GROUP BY device_id, metric
), bounds AS MATERIALIZED (
    -- Materialized and read by a lateral range scan below: inlined, the planner hashed the
    -- whole roll-up table against the keys and ran both subqueries once per stored minute
    -- of every key (1.5 s a fold at 180,000 rows, growing with the history kept).
    SELECT k.device_id, k.metric, k.lo,
           coalesce((
               SELECT r.minute FROM readings_1m r
               WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.minute < k.lo
               ORDER BY r.minute DESC LIMIT 1
           ), k.lo) AS from_minute,
           coalesce((
               SELECT r.minute FROM readings_1m r
               WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.minute > k.hi
               ORDER BY r.minute LIMIT 1
           ), k.hi) AS to_minute
    FROM keys k
), seq AS (
    SELECT b.device_id, b.metric, r.minute, b.lo,
           counter_step(
               lag(r.last_value) OVER (PARTITION BY b.device_id, b.metric ORDER BY r.minute),
               r.first_value
           ) AS inc
    FROM bounds b
    CROSS JOIN LATERAL (
        SELECT r.minute, r.last_value, r.first_value FROM readings_1m r
        WHERE r.device_id = b.device_id AND r.metric = b.metric
          AND r.minute >= b.from_minute AND r.minute <= b.to_minute
        OFFSET 0  -- kept a per-key index range scan (not pulled up into a hash join)
    ) r
), changed AS (
    UPDATE readings_1m t SET inc_from_prev = s.inc
    FROM seq s
    WHERE t.device_id = s.device_id AND t.metric = s.metric AND t.minute = s.minute
      AND s.minute >= s.lo AND t.inc_from_prev IS DISTINCT FROM s.inc
    RETURNING t.device_id, t.minute
)
INSERT INTO touched_minutes (device_id, minute)
SELECT device_id, minute FROM changed
"""

_STITCH_FRESH = _STITCH.format(keys_source="fresh_1m WHERE is_counter")

_TOUCH_FRESH = """
INSERT INTO touched_minutes (device_id, minute)
SELECT DISTINCT device_id, minute FROM fresh_1m
"""

# The sums behind the history of a park's signals for one minute, from readings_1m and
# the registry (docs/signals.md, "Per minute"). ``{rows_from}`` joins readings_1m r,
# devices d and device_type_metrics m for the park minutes to recompute. The signal
# vocabulary and the alarm rule (core.alarms.metric_alarm) come bound from
# core.signals.sql_parameters(); tests/storage/test_alarm_rule_sql.py checks they agree.
_PARK_MINUTES = """
WITH rows AS (
    SELECT d.park_id, r.minute, d.device_id, d.factory_id, d.type_id, m.metric, m.kind,
           r.n, r.sum, r.min, r.max, r.last_value, r.last_text, r.state_counts,
           coalesce(r.inc_within, 0) + coalesce(r.inc_from_prev, 0) AS increase,
           m.alarm_states,
           CASE WHEN d.thresholds ? m.metric
                THEN (d.thresholds -> m.metric ->> 'min')::double precision
                ELSE m.alarm_min END AS alarm_min,
           CASE WHEN d.thresholds ? m.metric
                THEN (d.thresholds -> m.metric ->> 'max')::double precision
                ELSE m.alarm_max END AS alarm_max
    {rows_from}
), flagged AS (
    SELECT rows.*,
           (type_id = %(line_type)s AND metric = %(state_metric)s) AS line_state,
           (type_id = %(line_type)s AND metric = %(state_metric)s
               AND last_text = %(running_state)s) AS line_running,
           (type_id = %(line_type)s AND metric = %(output_metric)s AND kind = %(counter_kind)s)
               AS line_output,
           (type_id = %(meter_type)s AND metric = %(power_metric)s) AS meter_power,
           (metric = %(energy_metric)s AND kind = %(counter_kind)s) AS energy,
           (kind = %(state_kind)s OR (kind = %(gauge_kind)s
               AND (alarm_min IS NOT NULL OR alarm_max IS NOT NULL))) AS can_alarm,
           CASE kind
               WHEN %(state_kind)s THEN last_text = %(fault_state)s
                   OR last_text = ANY(coalesce(alarm_states, '{{}}'::text[]))
               WHEN %(gauge_kind)s THEN last_value < alarm_min OR last_value > alarm_max
               ELSE false
           END AS in_alarm
    FROM rows
), park_states AS (
    SELECT park_id, metric, minute, jsonb_object_agg(state, samples ORDER BY state) AS counts
    FROM (
        SELECT rows.park_id, rows.metric, rows.minute, e.key AS state,
               sum(e.value::bigint) AS samples
        FROM rows
        CROSS JOIN LATERAL jsonb_each_text(rows.state_counts) e
        GROUP BY rows.park_id, rows.metric, rows.minute, e.key
    ) per_state
    GROUP BY park_id, metric, minute
), park_metrics AS (
    INSERT INTO park_metric_1m AS pm (
        park_id, metric, minute, devices, n, sum, min, max, mean_sum, increase, state_counts
    )
    SELECT a.park_id, a.metric, a.minute, a.devices, a.n, a.sum, a.min, a.max, a.mean_sum,
           a.increase, s.counts
    FROM (
        SELECT park_id, metric, minute, count(*)::integer AS devices, sum(n)::integer AS n,
               sum(sum) AS sum, min(min) AS min, max(max) AS max, sum(sum / n) AS mean_sum,
               sum(increase) FILTER (WHERE kind = %(counter_kind)s) AS increase
        FROM rows
        GROUP BY park_id, metric, minute
    ) a
    LEFT JOIN park_states s USING (park_id, metric, minute)
    ORDER BY a.park_id, a.metric, a.minute
    ON CONFLICT (park_id, metric, minute) DO UPDATE SET
        devices = excluded.devices, n = excluded.n, sum = excluded.sum, min = excluded.min,
        max = excluded.max, mean_sum = excluded.mean_sum, increase = excluded.increase,
        state_counts = excluded.state_counts
)
INSERT INTO park_1m AS p (
    park_id, minute, devices_reporting, lines_reporting_state, lines_running,
    factories_operating, operating_factories, lines_reporting_output, output_units,
    meters_reporting_power, power_kw, energy_reporting, energy_kwh, alarm_devices_reporting,
    devices_in_alarm
)
SELECT park_id, minute,
       count(DISTINCT device_id),
       count(*) FILTER (WHERE line_state),
       count(*) FILTER (WHERE line_running),
       count(DISTINCT factory_id) FILTER (WHERE line_running),
       coalesce(array_agg(DISTINCT factory_id) FILTER (WHERE line_running), '{{}}'),
       count(*) FILTER (WHERE line_output),
       coalesce(sum(increase) FILTER (WHERE line_output), 0),
       count(*) FILTER (WHERE meter_power),
       coalesce(sum(sum / n) FILTER (WHERE meter_power), 0),
       count(*) FILTER (WHERE energy),
       coalesce(sum(increase) FILTER (WHERE energy), 0),
       count(DISTINCT device_id) FILTER (WHERE can_alarm),
       count(DISTINCT device_id) FILTER (WHERE in_alarm)
FROM flagged
GROUP BY park_id, minute
ORDER BY park_id, minute
ON CONFLICT (park_id, minute) DO UPDATE SET
    devices_reporting = excluded.devices_reporting,
    lines_reporting_state = excluded.lines_reporting_state,
    lines_running = excluded.lines_running,
    factories_operating = excluded.factories_operating,
    operating_factories = excluded.operating_factories,
    lines_reporting_output = excluded.lines_reporting_output,
    output_units = excluded.output_units,
    meters_reporting_power = excluded.meters_reporting_power,
    power_kw = excluded.power_kw,
    energy_reporting = excluded.energy_reporting,
    energy_kwh = excluded.energy_kwh,
    alarm_devices_reporting = excluded.alarm_devices_reporting,
    devices_in_alarm = excluded.devices_in_alarm
"""

# Every device of each touched park, looked up by primary key for the touched minute (a
# lateral lookup: joined plainly, the planner hashed the whole roll-up table against the
# touched keys, 0.3 s a fold at 180,000 rows and growing with the history kept).
_PARK_MINUTES_TOUCHED = _PARK_MINUTES.format(
    rows_from="""
    FROM (
        SELECT DISTINCT d.park_id, t.minute FROM touched_minutes t
        JOIN devices d ON d.device_id = t.device_id
    ) pm
    JOIN devices d ON d.park_id = pm.park_id
    JOIN device_type_metrics m ON m.type_id = d.type_id
    CROSS JOIN LATERAL (
        SELECT r.minute, r.n, r.sum, r.min, r.max, r.last_value, r.last_text, r.state_counts,
               r.inc_within, r.inc_from_prev
        FROM readings_1m r
        WHERE r.device_id = d.device_id AND r.metric = m.metric AND r.minute = pm.minute
        OFFSET 0
    ) r
    """
)

_PARK_SUMS = (
    "devices_reporting, lines_reporting_state, lines_running, factories_operating,"
    " lines_reporting_output, output_units, meters_reporting_power, power_kw,"
    " energy_reporting, energy_kwh, alarm_devices_reporting, devices_in_alarm"
)

# park_1h: the sums of park_1m over each hour ``{park_hours}`` yields (park_id, hour), and
# each factory's operating minutes in it (NULL when a minute of the hour has no operating
# factories recorded, migration 0052).
_PARK_HOURS = f"""
WITH ph AS (
    {{park_hours}}
), sums AS (
    SELECT m.park_id, ph.hour, count(*)::integer AS minutes,
           {", ".join(f"sum({c.strip()}) AS {c.strip()}" for c in _PARK_SUMS.split(","))},
           bool_and(m.operating_factories IS NOT NULL) AS complete
    FROM ph
    JOIN park_1m m ON m.park_id = ph.park_id
        AND m.minute >= ph.hour AND m.minute < ph.hour + interval '1 hour'
    GROUP BY m.park_id, ph.hour
)
INSERT INTO park_1h AS h (park_id, hour, minutes, {_PARK_SUMS}, factory_operating_minutes)
SELECT s.park_id, s.hour, s.minutes, {", ".join(f"s.{c.strip()}" for c in _PARK_SUMS.split(","))},
       CASE WHEN s.complete THEN coalesce(b.by_factory, '{{{{}}}}') END
FROM sums s
CROSS JOIN LATERAL (
    SELECT jsonb_object_agg(c.factory_id, c.minutes) AS by_factory
    FROM (
        SELECT f.factory_id, count(*)::integer AS minutes
        FROM park_1m m
        CROSS JOIN LATERAL unnest(m.operating_factories) AS f(factory_id)
        WHERE m.park_id = s.park_id
          AND m.minute >= s.hour AND m.minute < s.hour + interval '1 hour'
        GROUP BY f.factory_id
    ) c
) b
ORDER BY s.park_id, s.hour
ON CONFLICT (park_id, hour) DO UPDATE SET
    minutes = excluded.minutes,
    {", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _PARK_SUMS.split(","))},
    factory_operating_minutes = excluded.factory_operating_minutes
"""

_PARK_HOURS_TOUCHED = _PARK_HOURS.format(
    park_hours="SELECT DISTINCT d.park_id, time_bucket(interval '1 hour', t.minute) AS hour"
    " FROM touched_minutes t JOIN devices d ON d.device_id = t.device_id"
)

_REBUILD_PARK_HOURS = _PARK_HOURS.format(
    park_hours="SELECT p.park_id, g.hour FROM parks p CROSS JOIN generate_series("
    "time_bucket(interval '1 hour', %(start)s::timestamptz),"
    " %(end)s::timestamptz - interval '1 microsecond', interval '1 hour') AS g(hour)"
)

# Late readings before the availability job's horizon mark their device for it to
# recompute (the rule: mark_availability, migration 0050).
_MARK_AVAILABILITY = """
SELECT mark_availability(array_agg(f.device_id), array_agg(f.since))
FROM (SELECT device_id, min(ts) AS since FROM {fresh} GROUP BY device_id) f
"""


# Each batch's piece: its inserted rows aggregated per device, metric and minute (no
# registry join: the fold looks up each key's kind once).
def pieces_sql(source: str) -> str:
    """The pieces of the readings in relation ``source``, as ``_PIECE_COLUMNS`` rows.

    The SQL twin of ``core.batch_summary.summarize`` (which makes them in ingest for
    batches of new readings); tests/storage/test_batch_summary_sql.py checks they agree.
    """
    aggregate = _AGGREGATE.format(source=source, where="", kinds="", is_counter="NULL::boolean")
    return f"SELECT {_PIECE_COLUMNS} FROM ({aggregate}) a"


_RECORD_DIRTY = f"INSERT INTO rollup_dirty ({_PIECE_COLUMNS}) " + pieces_sql("{fresh}")

_TAKE_DIRTY = f"""
WITH taken AS (
    DELETE FROM rollup_dirty RETURNING *
), pieces AS (
    INSERT INTO fold_pieces ({_PIECE_COLUMNS})
    SELECT {_PIECE_COLUMNS} FROM taken
)
SELECT count(*), min(committed_at) FROM taken
"""

# Each key's pieces (the batches' and the stored minute's), in time order. Pieces that do
# not overlap in measured time hold disjoint readings, so they merge exactly: counts and
# sums add, min/max widen, first/last come from the first/last piece, and each seam adds
# the counter step from one piece's last value to the next one's first. A key whose pieces
# overlap (late data between stored readings; or a batch that committed while a fold read
# its minute raw, so the stored minute already holds its readings) or that carries no
# piece (logged before migration 0025) goes to fold_keys instead, to be aggregated again
# from its raw readings.
_MERGE_PIECES = f"""
WITH keys AS (
    -- Grouped before the registry is joined: a lookup per key, not per piece.
    SELECT p.device_id, p.metric, p.minute,
           coalesce(k.kind = %(counter_kind)s, false) AS is_counter, p.unpieced
    FROM (
        SELECT device_id, metric, minute, bool_or(n IS NULL) AS unpieced
        FROM fold_pieces
        GROUP BY device_id, metric, minute
    ) p
    LEFT JOIN devices d ON d.device_id = p.device_id
    LEFT JOIN device_type_metrics k ON k.type_id = d.type_id AND k.metric = p.metric
), pieces AS (
    SELECT {_PIECE_COLUMNS} FROM fold_pieces WHERE n IS NOT NULL
    UNION ALL
    SELECT k.device_id, k.metric, k.minute, r.n, r.sum, r.min, r.max, r.first_ts, r.last_ts,
           r.first_value, r.last_value, r.first_text, r.last_text, coalesce(r.inc_within, 0),
           r.state_counts
    FROM keys k
    CROSS JOIN LATERAL (
        SELECT * FROM readings_1m r
        WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.minute = k.minute
        OFFSET 0  -- a lookup per key, never a hash join over the whole roll-up table
    ) r
), ordered AS (
    SELECT p.*,
           lag(p.last_ts) OVER w AS prev_last_ts,
           lag(p.last_value) OVER w AS prev_last_value
    FROM pieces p
    WINDOW w AS (PARTITION BY p.device_id, p.metric, p.minute ORDER BY p.first_ts)
), merged AS (
    SELECT device_id, metric, minute,
           sum(n)::integer AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
           min(first_ts) AS first_ts, max(last_ts) AS last_ts,
           first(first_value, first_ts) AS first_value, last(last_value, last_ts) AS last_value,
           first(first_text, first_ts) AS first_text, last(last_text, last_ts) AS last_text,
           sum(steps) + coalesce(sum(counter_step(prev_last_value, first_value)), 0) AS steps,
           coalesce(bool_or(first_ts <= prev_last_ts), false) AS overlapping
    FROM ordered
    GROUP BY device_id, metric, minute
), states AS (
    SELECT device_id, metric, minute, jsonb_object_agg(state, c ORDER BY state) AS counts
    FROM (
        SELECT p.device_id, p.metric, p.minute, e.key AS state, sum(e.value::bigint) AS c
        FROM pieces p
        CROSS JOIN LATERAL jsonb_each_text(p.state_counts) e
        WHERE p.state_counts IS NOT NULL  -- the pieces of state metrics only
        GROUP BY p.device_id, p.metric, p.minute, e.key
    ) per_state
    GROUP BY device_id, metric, minute
), raw AS (
    INSERT INTO fold_keys (device_id, metric, minute)
    SELECT k.device_id, k.metric, k.minute
    FROM keys k
    LEFT JOIN merged m USING (device_id, metric, minute)
    WHERE k.unpieced OR m.overlapping
)
INSERT INTO fresh_1m ({_COLUMNS})
SELECT m.device_id, m.metric, m.minute, k.is_counter, m.n, m.sum, m.min, m.max, m.first_ts,
       m.last_ts, m.first_value, m.last_value, m.first_text, m.last_text,
       CASE WHEN k.is_counter THEN m.steps END, s.counts
FROM keys k
JOIN merged m USING (device_id, metric, minute)
LEFT JOIN states s USING (device_id, metric, minute)
WHERE NOT k.unpieced AND NOT m.overlapping
"""


_COPY_PIECES = f"COPY rollup_dirty ({_PIECE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_PIECE_TYPES = [
    "text", "text", "timestamptz", "int4", "float8", "float8", "float8", "timestamptz",
    "timestamptz", "float8", "float8", "text", "text", "float8", "jsonb",
]  # fmt: skip
_MARK_DEVICES = "SELECT mark_availability(%b::text[], %b::timestamptz[])"


async def record_summary(
    cur: psycopg.AsyncCursor[tuple[object, ...]], summary: BatchSummary
) -> None:
    """Log a batch of new readings by its summary (core.batch_summary), in its transaction.

    The same log as ``record_dirty`` writes, with the pieces made in ingest: copied to
    ``rollup_dirty``, and the devices with readings before the availability horizon marked.
    """
    async with cur.copy(_COPY_PIECES) as copy:
        copy.set_types(_PIECE_TYPES)
        await copy_rows(copy, summary.pieces)
    devices = summary.devices
    await cur.execute(
        _MARK_DEVICES,
        (text_array(d.device_id for d in devices), timestamptz_array(d.first_ts for d in devices)),
    )


async def record_dirty(cur: psycopg.AsyncCursor[tuple[object, ...]], fresh: str) -> None:
    """Log what the batch inserted (the rows of table ``fresh``), in the writer's transaction.

    Appends the batch's pieces to ``rollup_dirty`` (plain inserts, no conflicts) and marks
    devices whose readings land before the availability job's horizon.
    """
    await cur.execute(_RECORD_DIRTY.format(fresh=fresh))
    await cur.execute(_MARK_AVAILABILITY.format(fresh=fresh))


async def vacuum_log(conn: psycopg.AsyncConnection) -> None:
    """Vacuum the invalidation log, which every fold empties (a queue).

    Between autovacuum's visits (at most one a minute per database) the rows folds deleted
    would pile up, and every reader of the log (the fold, the live signals' check for
    unfolded keys) would scan them. VACUUM never blocks the writers' inserts; SKIP_LOCKED
    skips a turn rather than wait. Runs outside a transaction (the mode is restored).
    """
    autocommit = conn.autocommit
    if not autocommit:
        await conn.set_autocommit(True)
    try:
        await conn.execute("VACUUM (SKIP_LOCKED) rollup_dirty")
    finally:
        if not autocommit and not conn.closed:
            await conn.set_autocommit(False)


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one fold did."""

    keys: int  # dirty entries taken (one per batch and key)
    oldest_committed_at: datetime | None  # when the oldest of them was committed
    merged: int = 0  # minutes merged from their pieces
    recomputed: int = 0  # minutes aggregated again from their raw readings


async def fold(conn: psycopg.AsyncConnection) -> FoldResult:
    """Fold every committed piece into the roll-ups, in one transaction.

    Exact under late and out-of-order data: a minute's pieces are merged with its stored
    row when none overlaps another in time, else the minute is aggregated again from its
    raw readings; counter minutes are re-stitched to their neighbours; every park minute
    touched is recomputed from ``readings_1m``. Keys committed while a fold runs stay for
    the next. One fold at a time (a transaction-level advisory lock that only folds and
    ``rebuild`` take; ingest never does).
    """
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_SETUP_SQL)
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
        await cur.execute(_TAKE_DIRTY)
        row = await cur.fetchone()
        taken, oldest = (int(row[0]), row[1]) if row else (0, None)
        merged = recomputed = 0
        if taken:
            await cur.execute(_MERGE_PIECES, _VOCABULARY)
            merged = max(cur.rowcount, 0)
            await cur.execute(_AGGREGATE_DIRTY, _VOCABULARY)
            recomputed = max(cur.rowcount, 0)
            await cur.execute(_REPLACE)
            await cur.execute(_QUARTERS_MERGED)
            await cur.execute(_QUARTERS_RESUMMED)
            await cur.execute(_TOUCH_FRESH)
            await cur.execute(_STITCH_FRESH)
            await cur.execute(_PARK_MINUTES_TOUCHED, _VOCABULARY)
            await cur.execute(_PARK_HOURS_TOUCHED)
            await cur.execute(
                "UPDATE rollup_fold_progress SET folded_at = now(), keys = keys + %s,"
                " oldest_committed_at = %s WHERE id",
                (taken, oldest),
            )
    return FoldResult(taken, oldest, merged, recomputed)


# -- bulk rebuilds ---------------------------------------------------------------------

# Counter minutes are stitched to each other inside the range by a window; the edges of
# the range by _REBUILD_EDGES.
_REBUILD_DEVICE_MINUTES = f"""
INSERT INTO readings_1m (
    device_id, metric, minute, n, sum, min, max, first_ts, last_ts, first_value,
    last_value, first_text, last_text, inc_within, inc_from_prev, state_counts
)
SELECT device_id, metric, minute, n, sum, min, max, first_ts, last_ts, first_value,
       last_value, first_text, last_text, inc_within,
       CASE WHEN is_counter THEN counter_step(
           lag(last_value) OVER (PARTITION BY device_id, metric ORDER BY minute), first_value
       ) END,
       state_counts
FROM ({_minutes("readings", where="WHERE s.ts >= %(start)s AND s.ts < %(end)s")}) a
"""

# The range's first minute of each counter follows the stored minute before the range;
# the first stored minute after the range follows the range's last one.
_REBUILD_EDGES = """
WITH keys AS (
    SELECT r.device_id, r.metric, min(r.minute) AS first_minute, max(r.minute) AS last_minute
    FROM readings_1m r
    JOIN devices d ON d.device_id = r.device_id
    JOIN device_type_metrics k ON k.type_id = d.type_id AND k.metric = r.metric
        AND k.kind = %(counter_kind)s
    WHERE r.minute >= %(start)s AND r.minute < %(end)s
    GROUP BY r.device_id, r.metric
), edges AS (
    SELECT k.device_id, k.metric, f.minute, f.first_value,
           (SELECT p.last_value FROM readings_1m p
            WHERE p.device_id = k.device_id AND p.metric = k.metric AND p.minute < %(start)s
            ORDER BY p.minute DESC LIMIT 1) AS previous
    FROM keys k
    JOIN readings_1m f ON f.device_id = k.device_id AND f.metric = k.metric
        AND f.minute = k.first_minute
    UNION ALL
    SELECT k.device_id, k.metric, n.minute, n.first_value, l.last_value
    FROM keys k
    JOIN readings_1m l ON l.device_id = k.device_id AND l.metric = k.metric
        AND l.minute = k.last_minute
    CROSS JOIN LATERAL (
        SELECT n.minute, n.first_value FROM readings_1m n
        WHERE n.device_id = k.device_id AND n.metric = k.metric AND n.minute >= %(end)s
        ORDER BY n.minute LIMIT 1
    ) n
), changed AS (
    UPDATE readings_1m t SET inc_from_prev = counter_step(e.previous, e.first_value)
    FROM edges e
    WHERE t.device_id = e.device_id AND t.metric = e.metric AND t.minute = e.minute
      AND t.inc_from_prev IS DISTINCT FROM counter_step(e.previous, e.first_value)
    RETURNING t.device_id, t.minute
)
INSERT INTO touched_minutes (device_id, minute)
SELECT device_id, minute FROM changed
"""

# Every readings_1m row of the range, scanned once.
_REBUILD_PARK_MINUTES = _PARK_MINUTES.format(
    rows_from="""
    FROM readings_1m r
    JOIN devices d ON d.device_id = r.device_id
    JOIN device_type_metrics m ON m.type_id = d.type_id AND m.metric = r.metric
    WHERE r.minute >= %(start)s AND r.minute < %(end)s
    """
)


# The quarters meeting the range, emptied and summed again (those at the range's ends also
# hold minutes outside it, already stored).
_QUARTERS_MEETING = (
    "{column} >= time_bucket(interval '15 minutes', %(start)s::timestamptz)"
    " AND {column} < time_bucket(interval '15 minutes',"
    " %(end)s::timestamptz - interval '1 microsecond') + interval '15 minutes'"
)
_REBUILD_QUARTERS_DELETE = (
    f"DELETE FROM readings_15m WHERE {_QUARTERS_MEETING.format(column='quarter')}"
)
_REBUILD_QUARTERS = f"""
INSERT INTO readings_15m (
    device_id, metric, quarter, n, sum, min, max, first_ts, last_ts, first_value,
    last_value, first_text, last_text
)
SELECT device_id, metric, time_bucket(interval '15 minutes', minute), {_QUARTER_AGGREGATES}
FROM readings_1m
WHERE {_QUARTERS_MEETING.format(column="minute")}
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


async def rebuild(
    conn: psycopg.AsyncConnection,
    start: datetime,
    end: datetime,
    *,
    step: timedelta = timedelta(days=1),
) -> None:
    """Recompute every roll-up of the whole minutes in ``[start, end)`` from ``readings``.

    For data loaded without ingest (a backfill, the query benchmark) or after a registry
    change moved devices between parks. Only for ranges whose raw readings are still
    stored: a range past raw retention would lose its roll-ups. Runs one transaction per
    ``step``, each holding the roll-up lock, so ingest waits at most one step.

    Raises:
        ValueError: ``start`` or ``end`` is not a whole minute, or ``step`` is not one.
    """
    for ts in (start, end):
        if ts.second or ts.microsecond:
            raise ValueError("rebuild ranges are whole minutes")
    if step % timedelta(minutes=1) or step <= timedelta(0):
        raise ValueError("step must be a positive number of whole minutes")
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        params = {"start": lo, "end": hi}
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(_SETUP_SQL)
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
            await cur.execute(
                "DELETE FROM readings_1m WHERE minute >= %(start)s AND minute < %(end)s", params
            )
            for table in ("park_1m", "park_metric_1m"):
                await cur.execute(
                    f"DELETE FROM {table} WHERE minute >= %(start)s AND minute < %(end)s",  # fixed
                    params,
                )
            await cur.execute(_REBUILD_DEVICE_MINUTES, {**params, **_VOCABULARY})
            await cur.execute(_REBUILD_EDGES, {**params, **_VOCABULARY})
            await cur.execute(_REBUILD_QUARTERS_DELETE, params)
            await cur.execute(_REBUILD_QUARTERS, params)
            await cur.execute(
                "DELETE FROM touched_minutes WHERE minute >= %(start)s AND minute < %(end)s",
                params,
            )
            await cur.execute(_REBUILD_PARK_MINUTES, {**params, **_VOCABULARY})
            await cur.execute(_PARK_MINUTES_TOUCHED, _VOCABULARY)  # the minute after the range
            await cur.execute(
                "DELETE FROM park_1h WHERE hour >= %(start)s AND hour < %(end)s", params
            )
            await cur.execute(_REBUILD_PARK_HOURS, params)
            await cur.execute(_PARK_HOURS_TOUCHED)
        logger.info("Rebuilt roll-ups of %s to %s", lo.isoformat(), hi.isoformat())
        lo = hi
