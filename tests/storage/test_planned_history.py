"""Property: planned-time history counts operating factory-minutes only inside shifts.

Whole hours are counted from park_1h's minutes per factory, the hours a shift begins or
ends inside (and hours without that breakdown) minute by minute; either way the answer is
the definition applied to raw readings: a factory operates in a minute when one of its lines'
last state in it is ``running``, and counts when the minute is inside its shifts.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.fleet import parse_fleet
from services.core.calendar import scheduled_intervals
from services.core.history import Bucket, BucketSignals
from services.core.readings import Reading
from services.core.registry import registry_from_fleet
from services.storage import history_queries
from services.storage.fleet_store import load_fleet
from services.storage.registry import read_registry
from tests.harness.storage import write_batches

# A Thursday. f1 follows the park's shift (01:30-04:00, a boundary inside an hour), f2 has
# its own: 00:00-02:00 and 03:10-03:50 (inside one hour). The readings span six hours.
D0 = datetime(2026, 10, 1, tzinfo=UTC)
SPAN_MIN = 6 * 60
MINUTE = timedelta(minutes=1)
EVERY_DAY = "[mon, tue, wed, thu, fri, sat, sun]"
FLEET = f"""
parks:
  - id: p1
    city: Hebi
    timezone: UTC
    calendar:
      shifts: [{{days: {EVERY_DAY}, start: "01:30", end: "04:00"}}]
    factories:
      - id: f1
        devices:
          - {{id: l1, type: production_line, capacity_units_per_hour: 60}}
      - id: f2
        calendar:
          shifts:
            - {{days: {EVERY_DAY}, start: "00:00", end: "02:00"}}
            - {{days: {EVERY_DAY}, start: "03:10", end: "03:50"}}
        devices:
          - {{id: l2, type: production_line, capacity_units_per_hour: 60}}
          - {{id: l3, type: production_line, capacity_units_per_hour: 60}}
"""
FACTORY = {"l1": "f1", "l2": "f2", "l3": "f2"}
STATES = ("running", "idle", "fault")
DATA_TABLES = (
    "readings, readings_1m, readings_15m, park_1m, park_1h, park_metric_1m, rollup_dirty,"
    " device_latest"
)


@pytest.fixture(scope="module")
def planned_db(db_conninfo: str) -> str:
    """The test database with this module's fleet (other tests truncate it themselves)."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {DATA_TABLES}")
    load_fleet(db_conninfo, parse_fleet(FLEET))
    return db_conninfo


@st.composite
def state_readings(draw: st.DrawFn) -> list[Reading]:
    """Line states at distinct times; each whole-minute run keeps one state for a while."""
    found: dict[tuple[str, datetime], Reading] = {}
    for _ in range(draw(st.integers(1, 25))):
        line = draw(st.sampled_from(sorted(FACTORY)))
        first = draw(st.integers(0, SPAN_MIN - 1))
        length = draw(st.integers(1, 120))
        state = draw(st.sampled_from(STATES))
        for minute in range(first, min(first + length, SPAN_MIN)):
            ts = D0 + minute * MINUTE + timedelta(seconds=draw(st.integers(0, 59)))
            found[(line, ts)] = Reading(line, "state", ts, None, state, ts)
    return list(found.values())


def expected_operating(readings: list[Reading], start: datetime, end: datetime) -> int:
    """Operating factory-minutes in ``[start, end)`` inside the factories' shifts, from raw."""
    park = registry_from_fleet(parse_fleet(FLEET)).parks["p1"]
    last: dict[tuple[str, datetime], Reading] = {}
    for r in sorted(readings, key=lambda r: r.ts):
        last[(r.device_id, r.ts.replace(second=0, microsecond=0))] = r
    operating = {
        (FACTORY[line], minute) for (line, minute), r in last.items() if r.text == "running"
    }
    count = 0
    for factory_id, minute in operating:
        intervals = scheduled_intervals(park.calendars.get(factory_id), start, end)
        count += start <= minute < end and any(lo <= minute < hi for lo, hi in intervals)
    return count


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_history_operating_minutes_equal_the_definition(
    planned_db: str, data: st.DataObject
) -> None:
    """Every bucket's operating factory-minutes equal the raw definition, breakdown or not."""
    with psycopg.connect(planned_db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {DATA_TABLES}")
    readings = data.draw(state_readings(), label="readings")
    cut = data.draw(st.integers(0, len(readings)), label="cut")
    write_batches(planned_db, [readings[:cut], readings[cut:]])
    if data.draw(st.booleans(), label="an hour without breakdown"):
        hour = D0 + timedelta(hours=data.draw(st.integers(0, 5)))
        with psycopg.connect(planned_db, autocommit=True) as conn:
            conn.execute(
                "UPDATE park_1h SET factory_operating_minutes = NULL WHERE hour = %s", (hour,)
            )
    # Mostly buckets of an hour or more over whole hours: the paths that read park_1h.
    bucket = data.draw(st.sampled_from([*Bucket, Bucket.HOUR, Bucket.DAY]), label="bucket")
    whole = data.draw(st.booleans(), label="the whole span")
    first = 0 if whole else data.draw(st.integers(0, SPAN_MIN - 1), label="start minute")
    last = SPAN_MIN if whole else data.draw(st.integers(first + 1, SPAN_MIN), label="end minute")
    start, end = D0 + first * MINUTE, D0 + last * MINUTE

    got_history = history(planned_db, start, end, bucket)
    assert got_history[0].slot.start == start
    for got in got_history:
        want = expected_operating(readings, got.slot.start, got.slot.end)
        assert got.sums.factories_operating == want, got.slot


def history(conninfo: str, start: datetime, end: datetime, bucket: Bucket) -> list[BucketSignals]:
    """The park's history over ``[start, end)``, as the API reads it."""

    async def query() -> list[BucketSignals]:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            park = (await read_registry(conn)).park("p1")
            assert park is not None
            return await history_queries.park_history(
                conn, park, start=start, end=end, bucket=bucket
            )

    return asyncio.run(query())


@pytest.mark.parametrize("without_breakdown", [None, 0, 2])
def test_hourly_operating_minutes_worked_by_hand(
    planned_db: str, without_breakdown: int | None
) -> None:
    """Every line runs for six hours; each hour counts only its factories' shift minutes.

    00:00 f2 (60); 01:00 f1 from 01:30 (30) and f2 (60); 02:00 f1 (60); 03:00 f1 (60) and
    f2 03:10-03:50 (40); nothing after 04:00. The same with an hour's breakdown missing.
    """
    with psycopg.connect(planned_db, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {DATA_TABLES}")
    readings = [
        Reading(line, "state", D0 + m * MINUTE, None, "running", D0 + m * MINUTE)
        for line in FACTORY
        for m in range(SPAN_MIN)
    ]
    write_batches(planned_db, [readings])
    if without_breakdown is not None:
        with psycopg.connect(planned_db, autocommit=True) as conn:
            conn.execute(
                "UPDATE park_1h SET factory_operating_minutes = NULL WHERE hour = %s",
                (D0 + timedelta(hours=without_breakdown),),
            )
    hourly = history(planned_db, D0, D0 + timedelta(hours=6), Bucket.HOUR)
    assert [b.sums.factories_operating for b in hourly] == [60, 90, 60, 100, 0, 0]
    assert [b.factory_minutes_scheduled for b in hourly] == [60, 90, 60, 100, 0, 0]
    assert [b.signals.operating_rate for b in hourly] == [1.0, 1.0, 1.0, 1.0, None, None]
    [daily] = history(planned_db, D0, D0 + timedelta(hours=6), Bucket.DAY)
    assert daily.sums.factories_operating == 310
