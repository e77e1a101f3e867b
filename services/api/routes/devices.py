"""Devices: latest values and readings, raw or time-bucketed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from schemas.api import DeviceLatest, Readings
from services.api.auth import require_scope
from services.api.csv_stream import PAGE_ROWS, csv_response, csv_responses, wants_csv
from services.api.deps import DeviceId, PoolDep, ReadingAgg, Rfc3339, SettingsDep
from services.api.problems import bad_request, not_found, time_range
from services.core.aggregates import Agg
from services.core.api_keys import Scope
from services.core.timeparams import DURATION_PATTERN, parse_duration
from services.storage import device_readings, queries

router = APIRouter(prefix="/v1/devices", tags=["devices"], dependencies=[require_scope(Scope.READ)])

# Raw points per request; a longer series is asked for with a bucket.
_MAX_RAW_POINTS = 100_000
_DEFAULT_RAW_POINTS = 10_000
# Buckets per request, so a 1s bucket over a year is refused rather than computed.
_MAX_BUCKETS = 100_000
# CSV is streamed a page at a time: two years of minutes.
_MAX_CSV_BUCKETS = 1_054_080
_CSV_HEADER = ("ts", "value")


@router.get(
    "/{device_id}/latest",
    summary="A device's latest values",
    responses={404: {"description": "Unknown device"}},
)
async def latest(device_id: DeviceId, pool: PoolDep, settings: SettingsDep) -> DeviceLatest:
    """The latest value of each metric (by measured time) and whether the device is online."""
    async with pool.connection() as conn:
        device = await queries.get_device(conn, device_id)
        if device is None:
            raise not_found("device", device_id)
        state = await queries.device_state(conn, device_id)
    now = datetime.now(UTC)
    fresh = state.last_seen is not None and state.last_seen >= now - timedelta(
        seconds=settings.online_timeout_s
    )
    announced_offline = (
        state.status_online is False
        and state.status_ts is not None
        and (state.last_seen is None or state.status_ts >= state.last_seen)
    )
    return DeviceLatest(
        device_id=device.device_id,
        park_id=device.park_id,
        factory_id=device.factory_id,
        type=device.type_id,
        online=fresh and not announced_offline,
        last_seen=state.last_seen,
        status_reason=state.status_reason,
        metrics=state.metrics,
    )


@router.get(
    "/{device_id}/readings",
    summary="A device's readings of one metric",
    response_model=Readings,
    responses={
        **csv_responses("The points; as CSV (`Accept: text/csv`): a `ts,value` header row"),
        400: {"description": "Bad parameter"},
        404: {"description": "Unknown device or metric"},
        503: {"description": "The database is unreachable, or too many CSV exports run"},
    },
)
async def readings(
    request: Request,
    device_id: DeviceId,
    pool: PoolDep,
    metric: Annotated[str, Query(examples=["power_kw"])],
    start: Annotated[Rfc3339 | None, Query(description="inclusive; default end - 1 h")] = None,
    end: Annotated[Rfc3339 | None, Query(description="exclusive; default now")] = None,
    bucket: Annotated[
        str | None,
        Query(
            pattern=DURATION_PATTERN,
            description="bucket width, e.g. 1m, 15m, 1h, 1d (1 s to 366 d)",
            examples=["15m"],
        ),
    ] = None,
    agg: Annotated[
        ReadingAgg | None, Query(description="aggregate per bucket; default avg")
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=_MAX_RAW_POINTS,
            description="raw points at most; default 10,000 (JSON), every point (CSV)",
        ),
    ] = None,
) -> Response | Readings:
    """Raw points (oldest first) without ``bucket``; with it, one point per bucket start.

    ``Accept: text/csv`` answers the same points as CSV (a ``ts,value`` header row),
    streamed: up to 1,054,080 buckets (two years of minutes), and every raw point in the
    range unless ``limit`` is given.
    """
    start_ts, end_ts = time_range(start, end, default_span=timedelta(hours=1))
    as_csv = wants_csv(request)
    async with pool.connection() as conn:
        device = await queries.get_device(conn, device_id)
        if device is None:
            raise not_found("device", device_id)
        kind = device.metric_kinds.get(metric)
        if kind is None:
            raise not_found(f"metric of device {device_id}", metric)
        if bucket is None:
            if agg is not None:
                raise bad_request("agg needs a bucket")
            if as_csv:
                return await _raw_csv(request, device_id, metric, start_ts, end_ts, limit)
            points = await device_readings.raw_readings(
                conn,
                device_id=device_id,
                metric=metric,
                start=start_ts,
                end=end_ts,
                limit=limit or _DEFAULT_RAW_POINTS,
            )
            return Readings(
                device_id=device_id,
                metric=metric,
                bucket=None,
                agg=None,
                start=start_ts,
                end=end_ts,
                points=points,
            )
        width = _bucket_width(bucket, start_ts, end_ts, as_csv=as_csv)
        chosen = agg or (Agg.LAST if kind == "state" else Agg.AVG)
        state_metric = kind == "state"
        if state_metric and chosen not in device_readings.STATE_AGGS:
            raise bad_request(
                f"agg {chosen} does not apply to a state metric; use count, first or last"
            )
        ask = device_readings.BucketRequest(
            device_id, metric, start_ts, end_ts, width, chosen, state_metric=state_metric
        )
        if as_csv:
            return await csv_response(
                request,
                f"{device_id}-{metric}-{bucket}-{chosen.value}",
                _CSV_HEADER,
                lambda c: device_readings.bucketed_reading_pages(c, ask, page_rows=PAGE_ROWS),
            )
        rows = await device_readings.bucketed_readings(conn, ask)
    # Plain data in the shape of ``Readings``, serialised once (tests check it against the
    # model): models for thousands of points would cost more than the query.
    body = {
        "device_id": device_id,
        "metric": metric,
        "bucket": bucket,
        "agg": chosen.value,
        "start": start_ts,
        "end": end_ts,
        "points": [{"ts": ts, "value": value} for ts, value in rows],
    }
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


def _bucket_width(bucket: str, start: datetime, end: datetime, *, as_csv: bool) -> timedelta:
    """The bucket's width, checked against the most buckets a request may hold.

    Raises:
        ProblemError: 400, a malformed bucket or too many buckets.
    """
    try:
        width = parse_duration(bucket)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    most = _MAX_CSV_BUCKETS if as_csv else _MAX_BUCKETS
    if (end - start) / width > most:
        raise bad_request(f"more than {most} buckets; widen the bucket")
    return width


async def _raw_csv(
    request: Request,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    limit: int | None,
) -> Response:
    return await csv_response(
        request,
        f"{device_id}-{metric}",
        _CSV_HEADER,
        lambda c: device_readings.raw_reading_pages(
            c,
            device_id=device_id,
            metric=metric,
            start=start,
            end=end,
            limit=limit,
            page_rows=PAGE_ROWS,
        ),
    )
