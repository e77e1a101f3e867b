"""Park signals (live and history), park metric aggregates and device availability."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from psycopg import AsyncConnection

from schemas import signals as out
from services.api.auth import require_scope
from services.api.csv_stream import PAGE_ROWS, Cell, csv_response, csv_responses, wants_csv
from services.api.deps import (
    DeviceId,
    MetricAgg,
    ParkId,
    PoolDep,
    RegistryDep,
    Rfc3339,
    SettingsDep,
)
from services.api.problems import aware, bad_request, not_found, time_range
from services.core import signals as core
from services.core.aggregates import Agg
from services.core.api_keys import Scope
from services.core.history import Bucket, BucketSignals, floor_minute
from services.core.registry import ParkInfo
from services.core.timeparams import DURATION_PATTERN, parse_duration
from services.storage import availability, history_queries, signal_bodies

router = APIRouter(tags=["signals"], dependencies=[require_scope(Scope.READ)])

# Windows shorter than this say little about counters; longer ones are history's job.
MIN_WINDOW = timedelta(seconds=10)
MAX_WINDOW = timedelta(days=1)
# as_of may run this far ahead of the server's clock (device clocks, request latency).
AS_OF_TOLERANCE = timedelta(minutes=1)
# Buckets per history or metric request: a week of minutes, or years of days.
MAX_BUCKETS = 10_080
# CSV is streamed a page at a time: two years of minutes.
MAX_CSV_BUCKETS = 1_054_080
# History buckets computed per query of a CSV export.
HISTORY_PAGE_BUCKETS = 1440
DEFAULT_HISTORY = timedelta(hours=24)
MAX_AVAILABILITY = timedelta(days=366)

_PARK_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "A parameter is out of range (problem+json)"},
    404: {"description": "Unknown park (problem+json)"},
    422: {"description": "A parameter is malformed (problem+json)"},
}

AsOf = Annotated[
    Rfc3339 | None,
    Query(
        description="the instant the signals describe, RFC 3339 with offset; default now",
        examples=["2026-11-26T10:00:00Z"],
    ),
]
Window = Annotated[
    str | None,
    Query(
        pattern=DURATION_PATTERN,
        description="window W of the counter increases: 30s, 5m, 300s, 1h (10 s to 1 day);"
        " default PARKSENSE_API_SIGNAL_WINDOW_S",
        examples=["5m"],
    ),
]


def resolve_as_of(as_of: datetime | None) -> datetime:
    """Return the instant to compute for: ``as_of`` checked, or now.

    Raises:
        ProblemError: 400, ``as_of`` has no offset or is in the future.
    """
    now = datetime.now(UTC)
    if as_of is None:
        return now
    ts = aware(as_of, "as_of")
    if ts > now + AS_OF_TOLERANCE:
        raise bad_request(
            f"as_of {ts.isoformat()} is in the future (server time {now.isoformat()})"
        )
    return ts


def resolve_window(window: str | None, default_s: float) -> float:
    """Return the window in seconds.

    Raises:
        ProblemError: 400, the window is malformed or out of range.
    """
    if window is None:
        return float(default_s)
    try:
        width = parse_duration(window)
    except ValueError as exc:
        raise bad_request(f"window: {exc}") from exc
    if not MIN_WINDOW <= width <= MAX_WINDOW:
        raise bad_request(f"window {window!r} must be between 10s and 1d")
    return width.total_seconds()


@router.get(
    "/v1/parks/{park_id}/signals",
    summary="A park's live signals",
    responses=_PARK_ERRORS,
)
async def park_signals(
    park_id: ParkId,
    pool: PoolDep,
    registry: RegistryDep,
    settings: SettingsDep,
    as_of: AsOf = None,
    window: Window = None,
) -> out.ParkSignals:
    """Every signal of PRODUCT.md over the window ``(as_of - W, as_of]``.

    With the counts behind each ratio, the health-index components, each signal's
    coverage and the alarms behind ``alarm_rate``. A past ``as_of`` is computed from
    stored readings (raw readings are kept for the retention period).
    """
    instant = resolve_as_of(as_of)
    window_s = resolve_window(window, settings.signal_window_s)
    async with pool.connection() as conn:
        park = (await registry.current(conn)).park(park_id)
        if park is None:
            raise not_found("park", park_id)
        [body] = await signal_bodies.live_bodies(
            conn,
            [park],
            as_of=instant,
            window_s=window_s,
            online_timeout_s=settings.online_timeout_s,
        )
    return body


def history_range(
    start: datetime | None,
    end: datetime | None,
    bucket: Bucket,
    max_buckets: int = MAX_BUCKETS,
) -> tuple[datetime, datetime]:
    """Return ``[start, end)`` in whole minutes: defaults, flooring and limits applied.

    Raises:
        ProblemError: 400, the range is empty or holds too many buckets.
    """
    end_ts = (
        floor_minute(aware(end, "end"))
        if end
        else floor_minute(datetime.now(UTC)) + timedelta(minutes=1)
    )
    start_ts = floor_minute(aware(start, "start")) if start else end_ts - DEFAULT_HISTORY
    if start_ts >= end_ts:
        raise bad_request("start must be at least a minute before end (both are whole minutes)")
    if (end_ts - start_ts) / bucket.width > max_buckets:
        raise bad_request(f"more than {max_buckets} buckets of {bucket.value}; widen the bucket")
    return start_ts, end_ts


Start = Annotated[
    Rfc3339 | None,
    Query(
        description="inclusive, truncated to the minute; default end - 24 h",
        examples=["2026-11-25T10:00:00Z"],
    ),
]
End = Annotated[
    Rfc3339 | None,
    Query(
        description="exclusive, truncated to the minute; default the end of the current minute",
        examples=["2026-11-26T10:00:00Z"],
    ),
]
BucketParam = Annotated[Bucket, Query(description="bucket width, aligned to UTC", examples=["1h"])]


_SIGNAL_NAMES = {signal: signal.value for signal in core.Signal}
_VALUE_NAMES = tuple(out.SignalValues.model_fields)


def bucket_body(found: BucketSignals) -> dict[str, Any]:
    """One history bucket as plain data in the shape of ``schemas.signals.SignalBucket``.

    A 30-day history at 1 h holds some 15,000 nested objects: building (or validating)
    them as models would cost several times what computing them does, so history answers
    plain data serialised once; tests check it against the model.
    """
    totals, sums, values = found.totals, found.sums, found.signals
    return {
        "ts": found.slot.ts,
        "start": found.slot.start,
        "end": found.slot.end,
        "signals": {name: getattr(values, name) for name in _VALUE_NAMES},
        "counts": {
            "minutes": found.slot.minutes,
            "device_minutes_registered": round(totals.devices_registered),
            "device_minutes_online": sums.devices_reporting,
            "factory_minutes_with_lines": round(found.factory_minutes_with_lines),
            "factory_minutes_scheduled": round(found.factory_minutes_scheduled),
            "factory_minutes_operating": sums.factories_operating,
            "line_minutes_running": sums.lines_running,
            "line_capacity_units": totals.line_capacity_units,
            "output_units_increase": sums.output_units,
            "meter_minutes_reporting": sums.meters_reporting_power,
            "power_kw_minutes": sums.power_kw,
            "energy_kwh_increase": sums.energy_kwh,
            "device_minutes_in_alarm": sums.devices_in_alarm,
        },
        "components": {
            name: {"weight": c.weight, "value": c.value, "points": c.points}
            for name, c in values.components.items()
        },
        "coverage": {
            _SIGNAL_NAMES[signal]: {
                "devices": c.devices,
                "reporting": c.reporting,
                "share": c.share,
            }
            for signal, c in found.coverage.items()
        },
    }


@router.get(
    "/v1/parks/{park_id}/signals/history",
    summary="A park's signals per time bucket",
    response_model=out.SignalHistory,
    responses={
        **csv_responses(
            "The buckets; as CSV (`Accept: text/csv`): one row per bucket, its signals and"
            " counts as columns"
        ),
        **_PARK_ERRORS,
    },
)
async def park_signal_history(
    request: Request,
    park_id: ParkId,
    pool: PoolDep,
    registry: RegistryDep,
    start: Start = None,
    end: End = None,
    bucket: BucketParam = Bucket.HOUR,
) -> Response:
    """The signals of each bucket in ``[start, end)``, computed from the per-minute roll-ups.

    Each bucket is clipped to the request; device and factory counts are in minutes (a
    device is online in a minute when it sent a reading in it). docs/signals.md defines
    every signal per bucket. ``Accept: text/csv`` streams the same buckets as CSV, up to
    1,054,080 of them (two years of minutes).
    """
    as_csv = wants_csv(request)
    start_ts, end_ts = history_range(start, end, bucket, MAX_CSV_BUCKETS if as_csv else MAX_BUCKETS)
    async with pool.connection() as conn:
        park = (await registry.current(conn)).park(park_id)
        if park is None:
            raise not_found("park", park_id)
        if as_csv:
            return await csv_response(
                request,
                f"{park_id}-signals-{bucket.value}",
                HISTORY_CSV_HEADER,
                lambda c: _history_rows(c, park, start_ts, end_ts, bucket),
            )
        found = await history_queries.park_history(
            conn, park, start=start_ts, end=end_ts, bucket=bucket
        )
    body = {
        "park_id": park_id,
        "bucket": bucket.value,
        "start": start_ts,
        "end": end_ts,
        "buckets": [bucket_body(b) for b in found],
    }
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


_COUNT_NAMES = tuple(out.BucketCounts.model_fields)
# A history bucket as a CSV row: its times, its signals, the counts behind them.
HISTORY_CSV_HEADER = ("ts", "start", "end", *_VALUE_NAMES, *_COUNT_NAMES)


async def _history_rows(
    conn: AsyncConnection, park: ParkInfo, start: datetime, end: datetime, bucket: Bucket
) -> AsyncIterator[list[list[Cell]]]:
    """The CSV rows of a history, one page of buckets per query."""
    async for page in history_queries.park_history_pages(
        conn, park, start=start, end=end, bucket=bucket, page_buckets=HISTORY_PAGE_BUCKETS
    ):
        rows: list[list[Cell]] = []
        for found in page:
            body = bucket_body(found)
            rows.append(
                [
                    body["ts"],
                    body["start"],
                    body["end"],
                    *(body["signals"][name] for name in _VALUE_NAMES),
                    *(body["counts"][name] for name in _COUNT_NAMES),
                ]
            )
        yield rows


_DEFAULT_AGG = {"gauge": Agg.AVG, "counter": Agg.INCREASE, "state": Agg.COUNT}


@router.get(
    "/v1/parks/{park_id}/metrics/{metric}",
    summary="A park metric per time bucket",
    response_model=out.ParkMetric,
    responses={
        **csv_responses("The points; as CSV (`Accept: text/csv`): a `ts,value,minutes` header"),
        **_PARK_ERRORS,
        404: {"description": "Unknown park or metric (problem+json)"},
    },
)
async def park_metric(
    request: Request,
    park_id: ParkId,
    metric: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["power_kw"])],
    pool: PoolDep,
    registry: RegistryDep,
    start: Start = None,
    end: End = None,
    bucket: BucketParam = Bucket.HOUR,
    agg: Annotated[
        MetricAgg | None,
        Query(
            description="avg: the park's total (sum over devices of their mean) averaged over"
            " the bucket's minutes with data; mean: mean of all readings; min, max, sum, count"
            " of all readings; increase: counters' increase. Default avg for gauges, increase"
            " for counters, count for states"
        ),
    ] = None,
    state: Annotated[
        str | None,
        Query(description="state metrics: count the readings in this state", examples=["running"]),
    ] = None,
) -> Response | out.ParkMetric:
    """One value per bucket for the whole park, from the per-minute park roll-up.

    For example the park's total ``power_kw`` per 15 minutes (``agg=avg``) or its
    ``output_units`` increase per hour. A bucket without data is ``null``, not left out.
    ``Accept: text/csv`` streams the same points as CSV, up to 1,054,080 buckets.
    """
    as_csv = wants_csv(request)
    start_ts, end_ts = history_range(start, end, bucket, MAX_CSV_BUCKETS if as_csv else MAX_BUCKETS)
    async with pool.connection() as conn:
        park = (await registry.current(conn)).park(park_id)
        if park is None:
            raise not_found("park", park_id)
        kinds = {
            rule.kind.value for d in park.devices for m, rule in d.metrics.items() if m == metric
        }
        if not kinds:
            raise not_found(f"metric of park {park_id}", metric)
        if len(kinds) > 1:
            raise bad_request(
                f"metric {metric!r} has different kinds in this park: {sorted(kinds)}"
            )
        [kind] = kinds
        chosen = agg or _DEFAULT_AGG[kind]
        if kind == "state" and chosen is not Agg.COUNT:
            raise bad_request("a state metric takes agg=count (optionally with state=...)")
        if state is not None and kind != "state":
            raise bad_request("state applies to state metrics only")
        if chosen is Agg.INCREASE and kind != "counter":
            raise bad_request("agg=increase applies to counters only")
        ask = history_queries.MetricRequest(
            park_id, metric, start_ts, end_ts, bucket, chosen, state=state
        )
        if as_csv:
            return await csv_response(
                request,
                f"{park_id}-{metric}-{bucket.value}-{chosen.value}",
                ("ts", "value", "minutes"),
                lambda c: _metric_rows(c, ask),
            )
        points = await history_queries.park_metric(conn, ask)
    return out.ParkMetric(
        park_id=park_id,
        metric=metric,
        kind=kind,
        bucket=bucket.value,
        agg=chosen.value,
        state=state,
        start=start_ts,
        end=end_ts,
        points=[out.MetricPoint(ts=p.ts, value=p.value, minutes=p.minutes) for p in points],
    )


async def _metric_rows(
    conn: AsyncConnection, ask: history_queries.MetricRequest
) -> AsyncIterator[list[tuple[Cell, ...]]]:
    """The CSV rows of a park metric, a page of points at a time."""
    async for page in history_queries.park_metric_pages(conn, ask, page_rows=PAGE_ROWS):
        yield [(p.ts, p.value, p.minutes) for p in page]


@router.get(
    "/v1/devices/{device_id}/availability",
    summary="A device's online state over time",
    responses={
        400: {"description": "A parameter is out of range (problem+json)"},
        404: {"description": "Unknown device (problem+json)"},
    },
)
async def device_availability(
    device_id: DeviceId,
    pool: PoolDep,
    registry: RegistryDep,
    settings: SettingsDep,
    start: Annotated[Rfc3339 | None, Query(description="inclusive; default end - 24 h")] = None,
    end: Annotated[Rfc3339 | None, Query(description="exclusive; default now")] = None,
) -> out.DeviceAvailability:
    """Online/offline transitions in ``[start, end)`` with their reason, and the online share.

    Online follows the live signals' rule at every instant: a reading at most the online
    timeout old and no offline status message sent since it. Reasons: ``reading``,
    ``status`` (an online status message), ``last_will`` (an offline status message) and
    ``silence`` (no reading for longer than the timeout).
    """
    start_ts, end_ts = time_range(start, end, default_span=DEFAULT_HISTORY)
    if end_ts - start_ts > MAX_AVAILABILITY:
        raise bad_request("at most 366 days per request")
    timeout = timedelta(seconds=settings.online_timeout_s)
    async with pool.connection() as conn:
        if device_id not in (await registry.current(conn)).devices:
            raise not_found("device", device_id)
        found = await availability.device_availability(
            conn, device_id, start=start_ts, end=end_ts, online_timeout=timeout
        )
    return out.DeviceAvailability(
        device_id=device_id,
        start=start_ts,
        end=end_ts,
        online_timeout_s=settings.online_timeout_s,
        online_at_start=found.online_at_start,
        online_s=found.online_s,
        online_share=found.online_share,
        transitions=[
            out.AvailabilityTransition(ts=t.ts, online=t.online, reason=t.reason.value)
            for t in found.transitions
        ],
    )
