"""Per-minute roll-ups maintained by the real COPY writer, worked out by hand."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.core.batching import Batch
from services.core.readings import Reading
from services.storage import signal_queries
from services.storage.rollups import fold, rebuild
from services.storage.writer import BatchWriter
from tests.harness.storage import (
    QUARTERS_OF_MINUTES,
    fold_now,
    load,
    reading,
    rows,
    status,
    t,
    write,
    write_batches,
)


def minute_rows(conninfo: str, device: str, metric: str) -> list[dict[str, Any]]:
    """The readings_1m rows of one device metric, oldest first."""
    return rows(
        conninfo,
        "SELECT minute, n, sum, min, max, first_ts, last_ts, first_value, last_value,"
        " first_text, last_text, inc_within, inc_from_prev, state_counts"
        " FROM readings_1m WHERE device_id = %s AND metric = %s ORDER BY minute",
        (device, metric),
    )


def counter_view(conninfo: str, device: str, metric: str) -> list[tuple[Any, ...]]:
    """(minute, n, first, last, inc_within, inc_from_prev) per stored minute."""
    return [
        (
            r["minute"],
            r["n"],
            r["first_value"],
            r["last_value"],
            r["inc_within"],
            r["inc_from_prev"],
        )
        for r in minute_rows(conninfo, device, metric)
    ]


@pytest.fixture
def db(clean_db: str) -> str:
    """A clean database with the test fleet loaded."""
    load(clean_db)
    return clean_db


def test_counter_minutes_stitch_across_a_reset(db: str) -> None:
    """Each minute keeps its inside steps and the step from the minute before it."""
    write(
        db,
        [
            reading("l1", "output_units", t(10, 0, 10), 100),
            reading("l1", "output_units", t(10, 0, 40), 110),
            reading("l1", "output_units", t(10, 1, 20), 5),  # restarted from zero
            reading("l1", "output_units", t(10, 1, 50), 12),
            reading("l1", "output_units", t(10, 3, 5), 20),
        ],
    )
    assert counter_view(db, "l1", "output_units") == [
        (t(10, 0), 2, 100.0, 110.0, 10.0, None),  # nothing before it
        (t(10, 1), 2, 5.0, 12.0, 7.0, 5.0),  # 110 -> 5 is a restart: +5
        (t(10, 3), 1, 20.0, 20.0, 0.0, 8.0),  # 12 -> 20 across the empty minute
    ]
    # Increase over the three minutes: 10 + 5 + 7 + 8 = 30.


def test_duplicates_change_nothing(db: str) -> None:
    """A redelivered batch inserts nothing and leaves every roll-up as it was."""
    batch = [
        reading("l1", "output_units", t(10, 0, 10), 100),
        reading("l1", "output_units", t(10, 0, 40), 110),
        reading("l1", "state", t(10, 0, 40), "running"),
        reading("m1", "power_kw", t(10, 0, 30), 50),
    ]
    first = write(db, batch)
    before = (
        rows(db, "SELECT * FROM readings_1m ORDER BY device_id, metric, minute"),
        rows(db, "SELECT * FROM park_1m ORDER BY park_id, minute"),
    )
    again = write(db, batch)
    mixed = write(db, [*batch, reading("m1", "power_kw", t(10, 0, 50), 70)])
    assert (first.inserted, again.inserted, mixed.inserted) == (4, 0, 1)
    after = rows(db, "SELECT * FROM readings_1m ORDER BY device_id, metric, minute")
    assert [r for r in after if r["device_id"] != "m1"] == [
        r for r in before[0] if r["device_id"] != "m1"
    ]
    power = minute_rows(db, "m1", "power_kw")
    assert [(r["n"], r["sum"], r["min"], r["max"]) for r in power] == [(2, 120.0, 50.0, 70.0)]
    park = rows(db, "SELECT power_kw, devices_reporting FROM park_1m WHERE park_id = 'p1'")
    assert park == [{"power_kw": 60.0, "devices_reporting": 2}]  # mean of 50 and 70


def test_late_data_lands_in_the_right_minute(db: str) -> None:
    """Late readings inside, before and between stored minutes keep every row exact."""
    write(
        db,
        [
            reading("l1", "output_units", t(10, 0, 10), 100),
            reading("l1", "output_units", t(10, 0, 40), 110),
            reading("l1", "output_units", t(10, 1, 20), 5),
            reading("l1", "output_units", t(10, 1, 50), 12),
            reading("l1", "output_units", t(10, 3, 5), 20),
        ],
    )
    # Inside a stored minute (recomputed from raw), before its first reading (merged), in
    # an earlier new minute, and in the empty minute between 10:01 and 10:03.
    write(db, [reading("l1", "output_units", t(10, 0, 25), 104)])
    write(db, [reading("l1", "output_units", t(10, 0, 5), 99)])
    write(
        db,
        [
            reading("l1", "output_units", t(9, 59, 30), 98),
            reading("l1", "output_units", t(10, 2, 30), 15),
        ],
    )
    assert counter_view(db, "l1", "output_units") == [
        (t(9, 59), 1, 98.0, 98.0, 0.0, None),
        (t(10, 0), 4, 99.0, 110.0, 11.0, 1.0),  # 99 -> 104 -> 110 inside, 98 -> 99 before
        (t(10, 1), 2, 5.0, 12.0, 7.0, 5.0),
        (t(10, 2), 1, 15.0, 15.0, 0.0, 3.0),
        (t(10, 3), 1, 20.0, 20.0, 0.0, 5.0),  # was 8 from 12; now 5 from 15
    ]
    [minute] = [r for r in minute_rows(db, "l1", "output_units") if r["minute"] == t(10, 0)]
    assert (minute["first_ts"], minute["last_ts"]) == (t(10, 0, 5), t(10, 0, 40))
    assert (minute["min"], minute["max"], minute["sum"]) == (99.0, 110.0, 413.0)
    # The park minute follows the stitched counters: 10:03 now adds 5, not 8.
    park = rows(db, "SELECT minute, output_units FROM park_1m WHERE park_id = 'p1' ORDER BY 1")
    assert [(r["minute"], r["output_units"]) for r in park] == [
        (t(9, 59), 0.0),
        (t(10, 0), 12.0),
        (t(10, 1), 12.0),
        (t(10, 2), 3.0),
        (t(10, 3), 5.0),
    ]


def test_state_minutes_count_samples_per_state(db: str) -> None:
    """A state metric's minute keeps its first and last state and the samples of each."""
    write(
        db,
        [
            reading("l1", "state", t(10, 0, 0), "running"),
            reading("l1", "state", t(10, 0, 20), "idle"),
            reading("l1", "state", t(10, 0, 40), "running"),
        ],
    )
    write(db, [reading("l1", "state", t(10, 0, 50), "fault")])  # appended
    write(db, [reading("l1", "state", t(10, 0, 30), "running")])  # in between
    [row] = minute_rows(db, "l1", "state")
    assert (row["n"], row["first_text"], row["last_text"]) == (5, "running", "fault")
    assert row["state_counts"] == {"running": 3, "idle": 1, "fault": 1}
    assert (row["sum"], row["inc_within"], row["inc_from_prev"]) == (None, None, None)


def test_park_minute_worked_by_hand(db: str) -> None:
    """One park minute: reporting devices, running lines, output, power, energy, alarms."""
    m = t(10, 5)
    write(
        db,
        [
            # Before the minute: counter baselines.
            reading("l1", "output_units", t(10, 4, 50), 1000),
            reading("l2", "output_units", t(10, 4, 55), 400),
            reading("m1", "energy_kwh", t(10, 4, 50), 5000),
        ],
    )
    write(
        db,
        [
            reading("m1", "power_kw", m + timedelta(seconds=10), 100),
            reading("m1", "power_kw", m + timedelta(seconds=40), 140),
            reading("m1", "energy_kwh", m + timedelta(seconds=40), 5002),
            reading("m2", "power_kw", m + timedelta(seconds=20), 30),
            reading("l1", "state", m + timedelta(seconds=10), "idle"),
            reading("l1", "state", m + timedelta(seconds=50), "running"),
            reading("l1", "output_units", m + timedelta(seconds=50), 1020),
            reading("l2", "state", m + timedelta(seconds=30), "fault"),
            reading("l2", "output_units", m + timedelta(seconds=30), 3),  # restart
            reading("e1", "temp_c", m + timedelta(seconds=5), 36),  # above its own 35
            reading("e1", "humidity_pct", m + timedelta(seconds=5), 50),
            reading("x1", "vibration_mm_s", m + timedelta(seconds=5), 7.0),  # under 7.1
            reading("l3", "state", m + timedelta(seconds=5), "running"),  # another park
        ],
    )
    [row] = rows(db, "SELECT * FROM park_1m WHERE park_id = 'p1' AND minute = %s", (m,))
    assert row == {
        "park_id": "p1",
        "minute": m,
        "devices_reporting": 6,  # m1, m2, l1, l2, e1, x1
        "lines_reporting_state": 2,
        "lines_running": 1,  # l1's last state in the minute
        "factories_operating": 1,  # f1
        "operating_factories": ["f1"],  # the factories behind that count
        "lines_reporting_output": 2,
        "output_units": 23.0,  # l1 1000 -> 1020, l2 400 -> 3 (restart)
        "meters_reporting_power": 2,
        "power_kw": 150.0,  # m1 mean 120 + m2 30
        "energy_reporting": 1,
        "energy_kwh": 2.0,
        "alarm_devices_reporting": 4,  # l1, l2 (state), e1 (thresholds), x1
        "devices_in_alarm": 2,  # l2 fault, e1 36 > 35
    }
    [other] = rows(db, "SELECT lines_running FROM park_1m WHERE park_id = 'p2'")
    assert other == {"lines_running": 1}


def test_status_messages_are_kept_as_events(db: str) -> None:
    """Each status message that moves the retained status is kept with its time."""
    write(db, [], [status("m1", t(10, 0), True)])
    write(db, [], [status("m1", t(10, 5), False)])
    write(db, [], [status("m1", t(10, 5), False)])  # redelivered: no new event
    write(db, [], [status("m1", t(10, 2), True)])  # older than the retained one: ignored
    write(db, [reading("m1", "power_kw", t(10, 6), 1)])  # last_seen moves: no event
    events = rows(db, "SELECT ts, online FROM device_status_events ORDER BY ts")
    assert [(e["ts"], e["online"]) for e in events] == [(t(10, 0), True), (t(10, 5), False)]


def test_rebuild_reproduces_what_ingest_maintained(db: str) -> None:
    """Rebuilding a range from raw readings gives the very rows ingest kept up to date."""
    batches = [
        [
            reading("l1", "output_units", t(10, m, s), (7 * m + s) % 50)
            for m in range(12)
            for s in (5, 35)
        ],
        [reading("m1", "energy_kwh", t(10, m, 20), 3 * m) for m in range(0, 12, 2)],
        [reading("l1", "state", t(10, m, 50), "running" if m % 3 else "fault") for m in range(12)],
        [reading("m1", "power_kw", t(10, m, 10), 10 + m) for m in range(12)],
        [reading("l1", "output_units", t(10, 4, 20), 1)],  # late, inside a stored minute
    ]
    write_batches(db, batches)
    query_1m = "SELECT * FROM readings_1m ORDER BY device_id, metric, minute"
    query_park = "SELECT * FROM park_1m ORDER BY park_id, minute"
    query_metric = "SELECT * FROM park_metric_1m ORDER BY park_id, metric, minute"
    query_15m = "SELECT * FROM readings_15m ORDER BY device_id, metric, quarter"
    query_1h = "SELECT * FROM park_1h ORDER BY park_id, hour"
    before = rows(db, query_1m), rows(db, query_park), rows(db, query_metric)
    quarters, hours = rows(db, query_15m), rows(db, query_1h)
    assert rows(db, QUARTERS_OF_MINUTES) == quarters  # the fold kept each quarter's sums
    assert {q["quarter"] for q in quarters} == {t(10, 0)}

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await rebuild(conn, t(10, 2), t(10, 9), step=timedelta(minutes=3))

    asyncio.run(run())
    assert rows(db, query_1m) == before[0]
    assert rows(db, query_park) == before[1]
    assert rows(db, query_metric) == before[2]
    assert rows(db, query_15m) == quarters
    assert rows(db, query_1h) == hours


def test_concurrent_writers_keep_rollups_exact(db: str) -> None:
    """Two workers writing the same minutes while folds run leave the rows a rebuild gives."""
    readings = [
        reading(device, metric, t(10, m, s), (m * 60 + s) % 37)
        for device, metric in (("l1", "output_units"), ("m1", "energy_kwh"), ("m1", "power_kw"))
        for m in range(6)
        for s in range(0, 60, 3)
    ]
    # Worker A takes every other reading, worker B the rest, each in small batches.
    shares = [readings[0::2], readings[1::2]]

    async def worker(share: list[Reading]) -> None:
        writer = BatchWriter(db)
        await writer.connect()
        try:
            for i in range(0, len(share), 25):
                await writer.write(Batch(readings=share[i : i + 25]))
        finally:
            await writer.close()

    async def folding(done: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            while not done.is_set():
                await fold(conn)
            await fold(conn)

    async def run() -> None:
        done = asyncio.Event()
        folder = asyncio.create_task(folding(done))
        await asyncio.gather(*(worker(share) for share in shares))
        done.set()
        await folder

    asyncio.run(run())
    query_1m = "SELECT * FROM readings_1m ORDER BY device_id, metric, minute"
    query_park = "SELECT * FROM park_1m ORDER BY park_id, minute"
    maintained = rows(db, query_1m), rows(db, query_park)

    async def rebuild_all() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await rebuild(conn, t(10, 0), t(10, 6))

    asyncio.run(rebuild_all())
    assert rows(db, query_1m) == maintained[0]
    assert rows(db, query_park) == maintained[1]


@pytest.mark.parametrize(
    ("unfolded", "end", "want"),
    [
        # Unfolded readings after the folded ones (the usual case: the fold is a second
        # behind): minutes before 10:03 come from the roll-ups, the rest raw. From the
        # baseline 6 at 10:00:40: +4 +2 +2, +2 (16 at 10:03:10), +3 (restart to 3).
        (
            [
                reading("m1", "energy_kwh", t(10, 3, 10), 16),
                reading("m1", "energy_kwh", t(10, 4, 5), 3),
            ],
            t(10, 4, 5),
            13.0,
        ),
        # A late reading between stored minutes (10:01:50, after 10:02 was folded): the
        # stitch of 10:02 is stale too, so everything from 10:01 on is read raw:
        # +4 (10 at 10:01:30), +10 (20), +12 (restart to 12); 14 at 10:02:50 is outside.
        ([reading("m1", "energy_kwh", t(10, 1, 50), 20)], t(10, 2, 30), 26.0),
        # Unfolded before the window's first minute: the whole window is read raw.
        ([reading("m1", "energy_kwh", t(9, 59, 0), 1)], t(10, 2, 30), 6.0),
    ],
)
def test_live_counter_increases_read_unfolded_minutes_raw(
    db: str, unfolded: list[Reading], end: datetime, want: float
) -> None:
    """Folded minutes come from the roll-ups, from the first unfolded minute on raw rows."""
    folded = [
        reading("m1", "energy_kwh", t(10, 0, 30), 4),
        reading("m1", "energy_kwh", t(10, 0, 40), 6),  # the window's baseline
        reading("m1", "energy_kwh", t(10, 1, 30), 10),
        reading("m1", "energy_kwh", t(10, 2, 10), 12),
        reading("m1", "energy_kwh", t(10, 2, 50), 14),
    ]
    write_batches(db, [folded])
    write_batches(db, [unfolded], fold_every=99, fold_at_end=False)
    assert rows(db, "SELECT count(*) > 0 AS dirty FROM rollup_dirty") == [{"dirty": True}]

    async def increases() -> dict[tuple[str, str], float]:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            return await signal_queries.counter_increases(conn, ["p1"], t(10, 0, 40), end)

    assert asyncio.run(increases())[("m1", "energy_kwh")] == pytest.approx(want)
    fold_now(db)  # and the same once folded
    assert asyncio.run(increases())[("m1", "energy_kwh")] == pytest.approx(want)
