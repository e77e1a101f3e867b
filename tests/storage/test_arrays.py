"""Encoded array parameters: psycopg's bytes for its own types, the same values back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer

from services.storage import arrays
from services.storage.arrays import float8_array, int8_array, text_array, timestamptz_array

T0 = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)
TEXTS = ["d1", None, "tab\there", "back\\slash\nnew\rline", "€ 𝄞", "", "d1", '{"a", NULL}']
TIMES = [
    T0,
    T0 + timedelta(microseconds=1),
    None,
    T0 - timedelta(days=9000, microseconds=7),  # before 2000: a negative count
    datetime(2026, 11, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),  # another offset
    T0,
]
FLOATS = [12.5, None, 0.0, -0.0, 1e308, -1e-308, 12.5, 0.1 + 0.2]  # -0.0 equals 0.0
INTS = [0, 1, 5000, -3, 2**62, 1]


@pytest.mark.parametrize(
    ("values", "encode"),
    [
        (TEXTS, text_array),
        ([t for t in TEXTS if t is not None], text_array),
        (TIMES, timestamptz_array),
        (FLOATS, float8_array),
        ([f for f in FLOATS if f is not None], float8_array),
    ],
)
def test_an_array_is_encoded_as_psycopg_dumps_the_list(
    values: list[object], encode: object
) -> None:
    """Text, timestamptz and float8 (with and without NULLs): psycopg's bytes exactly."""
    assert callable(encode)
    want = Transformer().get_dumper(values, PyFormat.BINARY).dump(values)
    assert encode(values) == bytes(want)  # type: ignore[arg-type] # a Buffer


async def _round_trip(conninfo: str) -> tuple[object, ...]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        arrays.register(conn)
        cur = await conn.execute(
            "SELECT %b::text[], %b::timestamptz[], %b::float8[], %b::int8[], %b::text[],"
            " %b::timestamptz[], %b::float8[], %b::int8[], %b::text[]",
            (
                text_array(TEXTS),
                timestamptz_array(TIMES),
                float8_array(FLOATS),
                int8_array(INTS),
                text_array([]),
                timestamptz_array([]),
                float8_array([None, None]),
                int8_array([None]),
                ["a", None],  # a plain list still goes as psycopg dumps it
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return tuple(row)


def test_arrays_reach_postgresql_as_their_values(clean_db: str) -> None:
    """Every type, empty and all-NULL arrays: PostgreSQL reads back the same values."""
    assert asyncio.run(_round_trip(clean_db)) == (
        TEXTS, TIMES, FLOATS, INTS, [], [], [None, None], [None], ["a", None],
    )  # fmt: skip


def test_text_that_postgresql_cannot_encode_is_refused_as_psycopg_refuses_it() -> None:
    """A lone surrogate raises UnicodeEncodeError (the writer's unencodable row)."""
    with pytest.raises(UnicodeEncodeError):
        text_array(["\ud800"])
