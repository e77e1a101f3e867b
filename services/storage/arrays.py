"""Columns as binary array parameters for ``unnest``, encoded in one pass a column.

psycopg dumps a Python list element by element in Python (``ListBinaryDumper``), and the
writer sends a dozen columns of a batch's summary per batch. Here a column is encoded at
once, in PostgreSQL's binary array format (``array_send``)::

    ndim=1 | has nulls | element oid | length | lower bound 1 | (length | bytes, or -1)...

with the element encodings psycopg uses (UTF-8 text; timestamptz as microseconds since
2000-01-01 UTC; IEEE 754 float8; int8), each repeated text or time encoded once (not floats:
-0.0 equals 0.0 but is sent as itself). A column is
wrapped in the ``bytes`` subclass of its type, whose dumper (``register``) passes it on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TypeVar

import psycopg
from psycopg import postgres
from psycopg.abc import AdaptContext
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

_HEAD = struct.Struct(">iiiii")  # ndim, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct(">iii")  # ndim 0, no nulls, element oid
_LENGTH = struct.Struct(">i")
_INT8 = struct.Struct(">iq")  # with its length, 8
_FLOAT8 = struct.Struct(">id")
_NULL = _LENGTH.pack(-1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

T = TypeVar("T")


class TextArray(bytes):
    """A ``text[]`` parameter, encoded."""

    element: ClassVar[str] = "text"


class TimestamptzArray(bytes):
    """A ``timestamptz[]`` parameter, encoded."""

    element: ClassVar[str] = "timestamptz"


class Float8Array(bytes):
    """A ``float8[]`` parameter, encoded."""

    element: ClassVar[str] = "float8"


class Int8Array(bytes):
    """An ``int8[]`` parameter, encoded."""

    element: ClassVar[str] = "int8"


def _text(value: str) -> bytes:
    data = value.encode()  # a lone surrogate raises UnicodeEncodeError, as psycopg does
    return _LENGTH.pack(len(data)) + data


def _timestamptz(value: datetime) -> bytes:
    return _INT8.pack(8, (value - _PG_EPOCH) // _MICROSECOND)


def _float8(value: float) -> bytes:
    return _FLOAT8.pack(8, value)


def _int8(value: int) -> bytes:
    return _INT8.pack(8, value)


def _encode(
    values: Iterable[T | None], element: str, encode: Callable[[T], bytes], *, reuse: bool
) -> tuple[bytes, ...]:
    """Header and elements of a column; with ``reuse``, equal values are encoded once.

    Only for types whose equal values have equal bytes (text, timestamptz).
    """
    oid = postgres.types[element].oid
    seen: dict[T, bytes] = {}
    parts: list[bytes] = [b""]
    has_null = 0
    for value in values:
        if value is None:
            parts.append(_NULL)
            has_null = 1
            continue
        if not reuse:
            parts.append(encode(value))
            continue
        part = seen.get(value)
        if part is None:
            part = seen[value] = encode(value)
        parts.append(part)
    length = len(parts) - 1
    parts[0] = _HEAD.pack(1, has_null, oid, length, 1) if length else _EMPTY.pack(0, 0, oid)
    return tuple(parts)


def text_array(values: Iterable[str | None]) -> TextArray:
    """Encode a ``text[]`` column."""
    return TextArray(b"".join(_encode(values, TextArray.element, _text, reuse=True)))


def timestamptz_array(values: Iterable[datetime | None]) -> TimestamptzArray:
    """Encode a ``timestamptz[]`` column of aware datetimes."""
    encoded = _encode(values, TimestamptzArray.element, _timestamptz, reuse=True)
    return TimestamptzArray(b"".join(encoded))


def float8_array(values: Iterable[float | None]) -> Float8Array:
    """Encode a ``float8[]`` column."""
    return Float8Array(b"".join(_encode(values, Float8Array.element, _float8, reuse=False)))


def int8_array(values: Iterable[int | None]) -> Int8Array:
    """Encode an ``int8[]`` column."""
    return Int8Array(b"".join(_encode(values, Int8Array.element, _int8, reuse=False)))


class _EncodedDumper(Dumper):
    """Passes an encoded array on as it is, as a binary parameter of its array type.

    The oid is set per instance, not on the class: a class oid would also make this the
    dumper of every list sent as that array type (a COPY's ``text[]`` column).
    """

    format = Format.BINARY
    array_oid: ClassVar[int]

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self.oid = self.array_oid

    def dump(self, obj: object) -> Buffer | None:
        if not isinstance(obj, bytes):
            raise TypeError(f"an encoded array is bytes, got {type(obj).__name__}")
        return obj


class _TextArrayDumper(_EncodedDumper):
    array_oid = postgres.types["text"].array_oid


class _TimestamptzArrayDumper(_EncodedDumper):
    array_oid = postgres.types["timestamptz"].array_oid


class _Float8ArrayDumper(_EncodedDumper):
    array_oid = postgres.types["float8"].array_oid


class _Int8ArrayDumper(_EncodedDumper):
    array_oid = postgres.types["int8"].array_oid


def register(conn: psycopg.AsyncConnection) -> None:
    """Let ``conn`` send the encoded arrays, each as its array type."""
    conn.adapters.register_dumper(TextArray, _TextArrayDumper)
    conn.adapters.register_dumper(TimestamptzArray, _TimestamptzArrayDumper)
    conn.adapters.register_dumper(Float8Array, _Float8ArrayDumper)
    conn.adapters.register_dumper(Int8Array, _Int8ArrayDumper)
