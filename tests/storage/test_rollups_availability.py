"""The availability job: transitions stored up to a settled horizon, late data recomputed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg

from services.core.availability import AvailabilityReason, Transition
from services.storage.availability import device_availability, materialize, stored_transitions
from tests.harness.storage import load, reading, rows, status, write

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=90)
R = AvailabilityReason


def at(minute: int, second: int = 0) -> datetime:
    """T0 shifted."""
    return T0 + timedelta(minutes=minute, seconds=second)


def run_job(conninfo: str, now: datetime) -> list[Transition]:
    """Run the job once at ``now``; return m1's stored transitions."""

    async def run() -> list[Transition]:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await materialize(conn, now=now, online_timeout=TIMEOUT)
            return await stored_transitions(conn, "m1", T0 - timedelta(days=1), now)

    return asyncio.run(run())


def test_late_readings_and_statuses_are_recomputed(clean_db: str) -> None:
    """A store-and-forward flush filling a silence removes it from the stored record."""
    load(clean_db)
    write(clean_db, [reading("m1", "power_kw", at(m), 1) for m in (0, 1, 2, 10, 11)])
    assert run_job(clean_db, at(30)) == [
        Transition(at(0), True, R.READING),
        Transition(at(3, 30), False, R.SILENCE),
        Transition(at(10), True, R.READING),
        Transition(at(12, 30), False, R.SILENCE),
    ]
    settled = rows(clean_db, "SELECT settled_to FROM availability_progress")[0]["settled_to"]
    assert settled == at(26)  # 08:30 - 90 s - 2 min, floored to the minute

    # Late: the minutes 3..9 arrive after the job settled them; then a last will at 08:20.
    write(clean_db, [reading("m1", "power_kw", at(m), 1) for m in range(3, 10)])
    write(clean_db, [reading("m1", "power_kw", at(20), 1)], [status("m1", at(20, 10), False)])
    dirty = rows(clean_db, "SELECT device_id, from_ts FROM availability_dirty")
    assert dirty == [{"device_id": "m1", "from_ts": at(3)}]
    stored = run_job(clean_db, at(40))
    assert stored == [
        Transition(at(0), True, R.READING),
        Transition(at(12, 30), False, R.SILENCE),
        Transition(at(20), True, R.READING),
        Transition(at(20, 10), False, R.LAST_WILL),
    ]
    assert rows(clean_db, "SELECT count(*) AS n FROM availability_dirty")[0]["n"] == 0

    async def computed() -> list[Transition]:
        async with await psycopg.AsyncConnection.connect(clean_db) as conn:
            found = await device_availability(
                conn, "m1", start=T0 - timedelta(minutes=5), end=at(36), online_timeout=TIMEOUT
            )
            return list(found.transitions)

    # The endpoint's computation and the stored record agree.
    assert asyncio.run(computed()) == stored


def test_a_changed_timeout_starts_the_record_over(clean_db: str) -> None:
    """Transitions depend on the timeout; a new one recomputes everything."""
    load(clean_db)
    write(clean_db, [reading("m1", "power_kw", at(m), 1) for m in (0, 1, 2)])
    run_job(clean_db, at(30))

    async def run() -> list[Transition]:
        async with await psycopg.AsyncConnection.connect(clean_db, autocommit=True) as conn:
            await materialize(conn, now=at(30), online_timeout=timedelta(seconds=300))
            return await stored_transitions(conn, "m1", T0, at(30))

    assert asyncio.run(run()) == [
        Transition(at(0), True, R.READING),
        Transition(at(7), False, R.SILENCE),  # 08:02 + 5 min
    ]
