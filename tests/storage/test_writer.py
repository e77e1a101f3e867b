"""The COPY writer: new readings go straight to the hypertable, duplicates take the slow path."""

from __future__ import annotations

import pytest

from tests.harness.storage import load, reading, rows, t, write


@pytest.fixture
def db(clean_db: str) -> str:
    """A clean database with the test fleet loaded."""
    load(clean_db)
    return clean_db


def test_a_batch_holding_one_reading_twice_stores_it_once(db: str) -> None:
    """The same reading twice in one batch: one row, counted once in the roll-up."""
    twice = reading("m1", "power_kw", t(10, 0, 30), 50)
    result = write(db, [twice, reading("m1", "power_kw", t(10, 0, 40), 70), twice])
    assert (result.staged, result.inserted, result.duplicates) == (3, 2, 1)
    assert rows(db, "SELECT count(*) AS n FROM readings") == [{"n": 2}]
    assert rows(db, "SELECT n, sum FROM readings_1m") == [{"n": 2, "sum": 120.0}]


def test_a_batch_holding_one_key_twice_with_two_values_stores_it_once(db: str) -> None:
    """One key, two values (readings that order by value): one row, counted once."""
    first = reading("m1", "power_kw", t(10, 0, 30), 70)
    result = write(db, [first, reading("m1", "power_kw", t(10, 0, 30), 50)])
    assert (result.staged, result.inserted, result.duplicates) == (2, 1, 1)
    assert rows(db, "SELECT count(*) AS n FROM readings") == [{"n": 1}]
    assert rows(db, "SELECT n FROM readings_1m") == [{"n": 1}]


def test_new_and_redelivered_batches_account_and_move_latest_alike(db: str) -> None:
    """Latest, last seen and delivery counts follow the inserted rows on both paths."""
    batch = [
        reading("m1", "power_kw", t(10, 0, 10), 50),
        reading("m1", "energy_kwh", t(10, 0, 10), 7),
        reading("l1", "state", t(10, 0, 20), "running"),
    ]
    first = write(db, batch)  # every row new: the plain COPY
    again = write(db, [*batch, reading("m1", "power_kw", t(10, 1, 0), 60)])  # one new row
    assert (first.inserted, again.inserted) == (3, 1)
    assert rows(db, "SELECT sum(accepted)::int AS a, sum(stored)::int AS s FROM delivery_1m") == [
        {"a": 7, "s": 4}
    ]
    assert rows(db, "SELECT device_id, metric, ts, value FROM device_latest ORDER BY 1, 2") == [
        {"device_id": "l1", "metric": "state", "ts": t(10, 0, 20), "value": None},
        {"device_id": "m1", "metric": "energy_kwh", "ts": t(10, 0, 10), "value": 7.0},
        {"device_id": "m1", "metric": "power_kw", "ts": t(10, 1, 0), "value": 60.0},
    ]
    assert rows(db, "SELECT device_id, last_seen_ts FROM device_status ORDER BY 1") == [
        {"device_id": "l1", "last_seen_ts": t(10, 0, 20)},
        {"device_id": "m1", "last_seen_ts": t(10, 1, 0)},
    ]
