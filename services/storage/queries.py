"""Read queries behind the API (registry, latest values, dead letters, delivery).

A device's readings are in ``device_readings.py``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from schemas.api import (
    DeadLetter,
    DeviceSummary,
    FactoryDetail,
    LatestValue,
    ParkDetail,
    ParkSummary,
)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device and its type's metric kinds."""

    device_id: str
    park_id: str
    factory_id: str
    type_id: str
    metric_kinds: dict[str, str]


async def list_parks(conn: AsyncConnection) -> list[ParkSummary]:
    """Every park with its factory and device counts."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT p.park_id, p.name, p.name_zh, p.city,
                   (SELECT count(*) FROM factories f WHERE f.park_id = p.park_id) AS factories,
                   (SELECT count(*) FROM devices d WHERE d.park_id = p.park_id) AS devices
            FROM parks p ORDER BY p.park_id
            """
        )
        return [ParkSummary(**row) for row in await cur.fetchall()]


async def get_park(conn: AsyncConnection, park_id: str) -> ParkDetail | None:
    """One park with its factories and devices, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT park_id, name, name_zh, city FROM parks WHERE park_id = %s", (park_id,)
        )
        park = await cur.fetchone()
        if park is None:
            return None
        await cur.execute(
            """
            SELECT f.factory_id, f.name, f.name_zh, f.industry, d.device_id, d.type_id,
                   d.capacity_units_per_hour
            FROM factories f LEFT JOIN devices d ON d.factory_id = f.factory_id
            WHERE f.park_id = %s ORDER BY f.factory_id, d.device_id
            """,
            (park_id,),
        )
        factories: dict[str, dict[str, Any]] = {}
        for row in await cur.fetchall():
            factory = factories.setdefault(
                row["factory_id"],
                {
                    "factory_id": row["factory_id"],
                    "name": row["name"],
                    "name_zh": row["name_zh"],
                    "industry": row["industry"],
                    "devices": [],
                },
            )
            if row["device_id"] is not None:
                factory["devices"].append(
                    DeviceSummary(
                        device_id=row["device_id"],
                        type=row["type_id"],
                        capacity_units_per_hour=row["capacity_units_per_hour"],
                    )
                )
    return ParkDetail(
        park_id=park["park_id"],
        name=park["name"],
        name_zh=park["name_zh"],
        city=park["city"],
        factories=[FactoryDetail(**f) for f in factories.values()],
    )


async def get_device(conn: AsyncConnection, device_id: str) -> DeviceRecord | None:
    """A registered device with its metric kinds, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT d.device_id, d.park_id, d.factory_id, d.type_id,
                   coalesce(jsonb_object_agg(m.metric, m.kind)
                            FILTER (WHERE m.metric IS NOT NULL), '{}') AS kinds
            FROM devices d LEFT JOIN device_type_metrics m ON m.type_id = d.type_id
            WHERE d.device_id = %s
            GROUP BY d.device_id
            """,
            (device_id,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return DeviceRecord(
        row["device_id"], row["park_id"], row["factory_id"], row["type_id"], dict(row["kinds"])
    )


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's latest values and online facts."""

    metrics: dict[str, LatestValue]
    last_seen: datetime | None
    status_online: bool | None
    status_ts: datetime | None
    status_reason: str | None = None


async def device_state(conn: AsyncConnection, device_id: str) -> DeviceState:
    """Latest value of each metric, the newest measured time and the last status message."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT metric, ts, value, value_text FROM device_latest WHERE device_id = %s"
            " ORDER BY metric",
            (device_id,),
        )
        metrics = {
            row["metric"]: LatestValue(
                ts=row["ts"],
                value=row["value_text"] if row["value_text"] is not None else row["value"],
            )
            for row in await cur.fetchall()
        }
        await cur.execute(
            "SELECT online, status_ts, status_reason, last_seen_ts FROM device_status"
            " WHERE device_id = %s",
            (device_id,),
        )
        status = await cur.fetchone()
    if status is None:
        return DeviceState(metrics, None, None, None)
    return DeviceState(
        metrics,
        status["last_seen_ts"],
        status["online"],
        status["status_ts"],
        status["status_reason"],
    )


async def dead_letters(
    conn: AsyncConnection,
    *,
    reason: str | None,
    device_id: str | None,
    park_id: str | None,
    since: datetime | None,
    limit: int,
) -> list[DeadLetter]:
    """Dead letters, newest first, filtered by reason, device, park and time.

    Each is one reason refused in one message, with that message's payload.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT d.id, d.received_at, d.reason, d.detail, d.topic, d.park_id, d.device_id,
                   d.metric, d.ts, d.message_id, d.refused, d.metrics, m.payload
            FROM dead_letters d JOIN dead_letter_messages m USING (message_id)
            WHERE (%(reason)s::text IS NULL OR d.reason = %(reason)s)
              AND (%(device)s::text IS NULL OR d.device_id = %(device)s)
              AND (%(park)s::text IS NULL OR d.park_id = %(park)s)
              AND (%(since)s::timestamptz IS NULL OR d.received_at >= %(since)s)
            ORDER BY d.received_at DESC, d.id DESC
            LIMIT %(limit)s
            """,
            {
                "reason": reason,
                "device": device_id,
                "park": park_id,
                "since": since,
                "limit": limit,
            },
        )
        rows = await cur.fetchall()
    letters = []
    for row in rows:
        payload, encoding = _payload_text(row.pop("payload"))
        letters.append(DeadLetter(**row, payload=payload, payload_encoding=encoding))
    return letters


def _payload_text(payload: bytes | None) -> tuple[str | None, str | None]:
    if payload is None:
        return None, None
    try:
        return bytes(payload).decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """Raw delivery figures of a park over an interval."""

    accepted: int
    stored: int
    refused: dict[str, int]
    devices_registered: int
    devices_reporting: int
    silent_devices: list[str]


# Silent devices listed in a delivery report; the count covers them all.
_MAX_SILENT_LISTED = 100


async def park_delivery(
    conn: AsyncConnection, park_id: str, start: datetime, end: datetime
) -> DeliveryCounts:
    """Accepted, stored and refused counts of a park, and which devices stayed silent."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(stored), 0) FROM delivery_1m"
            " WHERE park_id = %s AND minute >= date_trunc('minute', %s::timestamptz)"
            " AND minute < %s",
            (park_id, start, end),
        )
        totals = await cur.fetchone()
        await cur.execute(
            "SELECT reason, sum(refused) FROM dead_letters WHERE park_id = %s"
            " AND received_at >= %s AND received_at < %s GROUP BY reason ORDER BY reason",
            (park_id, start, end),
        )
        refused = {str(reason): int(n) for reason, n in await cur.fetchall()}
        await cur.execute(
            """
            SELECT d.device_id,
                   EXISTS (SELECT 1 FROM readings r WHERE r.device_id = d.device_id
                           AND r.ts >= %s AND r.ts < %s) AS reporting
            FROM devices d WHERE d.park_id = %s ORDER BY d.device_id
            """,
            (start, end, park_id),
        )
        devices = await cur.fetchall()
    silent = [device for device, reporting in devices if not reporting]
    accepted, stored = (int(totals[0]), int(totals[1])) if totals else (0, 0)
    return DeliveryCounts(
        accepted=accepted,
        stored=stored,
        refused=refused,
        devices_registered=len(devices),
        devices_reporting=len(devices) - len(silent),
        silent_devices=silent[:_MAX_SILENT_LISTED],
    )


async def park_exists(conn: AsyncConnection, park_id: str) -> bool:
    """Whether the park is registered."""
    cur = await conn.execute("SELECT 1 FROM parks WHERE park_id = %s", (park_id,))
    return await cur.fetchone() is not None
