"""The one availability mark rule (mark_availability): who is marked, from when, counted up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from tests.harness.storage import load, reading, rows, status, write

HORIZON = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)


def at(minute: int) -> datetime:
    """Minutes after 08:00 of the test day (the horizon is at 08:30)."""
    return HORIZON + timedelta(minutes=minute - 30)


def settle(conninfo: str, to: datetime | None) -> None:
    """Put the availability job's settled horizon at ``to`` (None: the job never ran)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO availability_progress (id, settled_to) VALUES (true, %s)"
            " ON CONFLICT (id) DO UPDATE SET settled_to = excluded.settled_to",
            (to,),
        )


def marks(conninfo: str) -> dict[str, tuple[datetime, int]]:
    """Each marked device: from when, and how many marks it has had."""
    found = rows(conninfo, "SELECT device_id, from_ts, marks FROM availability_dirty")
    return {r["device_id"]: (r["from_ts"], r["marks"]) for r in found}


def test_nothing_is_marked_before_the_job_has_settled_anything(clean_db: str) -> None:
    """Without a horizon, neither a reading nor a status message marks its device."""
    load(clean_db)
    settle(clean_db, None)
    write(clean_db, [reading("m1", "power_kw", at(0), 1)], [status("m2", at(1), False)])
    assert marks(clean_db) == {}


def test_late_readings_and_statuses_mark_from_their_earliest_time(clean_db: str) -> None:
    """Readings and statuses at or before the horizon mark their device; newer ones do not."""
    load(clean_db)
    settle(clean_db, HORIZON)
    write(
        clean_db,
        [reading("m1", "power_kw", at(m), 1) for m in (10, 20, 31)]
        + [reading("l1", "output_units", at(40), 5)],
    )
    assert marks(clean_db) == {"m1": (at(10), 1)}
    # A status message before the horizon (the trigger on device_status), then an earlier
    # reading of the same device: the mark moves back and counts up each time.
    write(clean_db, [], [status("m1", at(25), False)])
    assert marks(clean_db) == {"m1": (at(10), 2)}
    write(clean_db, [reading("m1", "energy_kwh", at(5), 1)])
    assert marks(clean_db) == {"m1": (at(5), 3)}
    write(clean_db, [], [status("e1", at(30), True)])
    assert marks(clean_db)["e1"] == (at(30), 1)
