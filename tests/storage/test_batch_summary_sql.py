"""Property: the batch summary made in ingest equals what SQL derives from the same rows.

``core.batch_summary.summarize`` replaces, for batches of new readings, the SQL that
aggregates the staged rows (``rollups.pieces_sql``, still used after a conflict and by the
fold): pieces, latest values, each device's span and the delivery counts must agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.batch_summary import summarize
from services.core.readings import Reading
from services.storage.rollups import pieces_sql

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
RECEIVED = [T0 + timedelta(minutes=5, seconds=s) for s in (0, 40, 59.5, 60, 130)]

_SOURCE = """
CREATE TEMP TABLE src (
    device_id text, metric text, ts timestamptz, value double precision, value_text text,
    received_at timestamptz
) ON COMMIT DROP
"""

# A value (small integers, so that counters restart often, or any finite float), a text,
# or both (the aggregate does not know kinds).
_VALUES = st.one_of(
    st.tuples(st.integers(0, 30).map(float), st.none()),
    st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.none()),
    st.tuples(st.none(), st.sampled_from(["running", "idle", "fault"])),
    st.tuples(st.integers(0, 5).map(float), st.sampled_from(["a", "b"])),
)
_BATCHES = st.dictionaries(
    st.tuples(
        st.sampled_from(["d1", "d2", "d10"]),
        st.sampled_from(["energy_kwh", "power_kw", "state"]),
        st.integers(0, 299).map(lambda s: T0 + timedelta(seconds=s, microseconds=s % 7)),
    ),
    st.tuples(_VALUES, st.sampled_from(RECEIVED)),
    min_size=1,
    max_size=60,
)


def _readings(batch: dict[tuple[str, str, datetime], Any]) -> list[Reading]:
    return sorted(
        (
            Reading(device, metric, ts, value, text, received)
            for (device, metric, ts), ((value, text), received) in batch.items()
        ),
        key=lambda r: (r.device_id, r.metric, r.ts),
    )


def _sql_side(conninfo: str, readings: list[Reading]) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute(_SOURCE)
        with conn.cursor().copy("COPY src FROM STDIN") as copy:
            for r in readings:
                copy.write_row((r.device_id, r.metric, r.ts, r.value, r.text, r.received_at))
        return {
            "pieces": conn.execute(pieces_sql("src") + " ORDER BY 1, 2, 3").fetchall(),
            "latest": conn.execute(
                "SELECT DISTINCT ON (device_id, metric) * FROM src"
                " ORDER BY device_id, metric, ts DESC"
            ).fetchall(),
            "devices": conn.execute(
                "SELECT device_id, min(ts), max(ts) FROM src GROUP BY 1 ORDER BY 1"
            ).fetchall(),
            "delivered": conn.execute(
                "SELECT device_id, date_trunc('minute', received_at), count(*) FROM src"
                " GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall(),
        }


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-9)
    return bool(a == b)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=_BATCHES)
def test_the_summary_equals_the_sql_aggregates_of_the_same_rows(
    clean_db: str, batch: dict[tuple[str, str, datetime], Any]
) -> None:
    """Pieces, latest values, device spans and delivery counts: the same from both.

    Pieces: counts, sums, extremes, firsts and lasts, counter steps, state counts.
    """
    readings = _readings(batch)
    want = _sql_side(clean_db, readings)
    got = summarize(readings)
    assert [tuple(r) for r in got.latest] == want["latest"]
    assert [tuple(d) for d in got.devices] == want["devices"]
    assert [tuple(d) for d in got.delivered] == want["delivered"]
    assert len(got.pieces) == len(want["pieces"])
    for piece, row in zip(got.pieces, want["pieces"], strict=True):
        assert all(_close(a, b) for a, b in zip(piece, row, strict=True)), (piece, row)


def test_readings_out_of_key_order_or_twice_are_refused() -> None:
    """The summary trusts the writer's sort; a batch out of order is a bug, not data."""
    a = Reading("d1", "power_kw", T0, 1.0, None, RECEIVED[0])
    b = a._replace(ts=T0 + timedelta(seconds=1))
    c = a._replace(metric="energy_kwh")
    for bad in ([b, a], [a, a], [a, c], [a, b, b]):
        with pytest.raises(ValueError, match="sorted by key"):
            summarize(bad)
