"""Objects → Readings or Rejections: every reading is judged on its own."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from schemas.fleet import MetricKind
from services.core.decode import DecodeFailure, decode_json, decode_samples
from services.core.readings import (
    MessageOutcome,
    Reading,
    Rejection,
    RejectReason,
    StatusUpdate,
    refused_message,
)
from services.core.registry import DeviceEntry, MetricRule, Registry
from services.core.text import sanitised, shown, storable
from services.core.topics import Channel, is_platform_topic, parse_topic

# Epoch milliseconds outside these bounds cannot be turned into a datetime.
_MIN_EPOCH_MS = -62_135_596_800_000
_MAX_EPOCH_MS = 253_402_300_799_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# Named tuples are built with tuple.__new__ on the common path: the generated __new__ is a
# Python function, which costs more than the rest of accepting a value.
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Limits:
    """How far from the time of receipt a measured time may be."""

    max_future: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=30)


class _TimestampError(ValueError):
    pass


def parse_ts(raw: object) -> datetime:
    """Parse an RFC 3339 string with offset or integer epoch milliseconds into aware UTC.

    Raises:
        ValueError: the value is neither.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not _MIN_EPOCH_MS <= raw <= _MAX_EPOCH_MS:
            raise _TimestampError(f"epoch milliseconds {shown(raw)} out of range")
        return _EPOCH + _MILLISECOND * raw  # exact: a timedelta times an int
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise _TimestampError(f"ts {shown(raw)} is not RFC 3339") from exc
        if ts.tzinfo is None:
            raise _TimestampError(f"ts {shown(raw)} has no UTC offset")
        return ts.astimezone(UTC)
    raise _TimestampError(f"ts must be an RFC 3339 string or epoch milliseconds, got {shown(raw)}")


def judge_message(
    topic: str, payload: bytes, registry: Registry, received_at: datetime, limits: Limits
) -> MessageOutcome:
    """Turn one MQTT message into readings, a status update and rejections.

    A message on the platform's own topic (a park's signals) turns into nothing: it is
    acknowledged, neither stored nor dead-lettered.
    """
    address = parse_topic(topic)
    if address is None:
        if is_platform_topic(topic):
            return MessageOutcome()
        return refused_message(
            RejectReason.BAD_TOPIC,
            "not parksense/v1/{park}/{factory}/{device}/{telemetry|status}"
            f" with valid ids: {shown(topic)}",
            topic,
            payload,
            received_at,
        )
    device = registry.devices.get(address.device_id)
    if device is None:
        return refused_message(
            RejectReason.UNKNOWN_DEVICE,
            f"device {address.device_id!r} is not registered",
            topic,
            payload,
            received_at,
            address,
        )
    if (device.park_id, device.factory_id) != (address.park_id, address.factory_id):
        return refused_message(
            RejectReason.TOPIC_MISMATCH,
            f"device {device.device_id!r} is registered in "
            f"{device.park_id}/{device.factory_id}, not "
            f"{address.park_id}/{address.factory_id}",
            topic,
            payload,
            received_at,
            address,
        )
    if address.channel is Channel.STATUS:
        return _judge_status(topic, payload, device, received_at, limits)
    samples = decode_samples(payload)
    if isinstance(samples, DecodeFailure):
        return refused_message(samples.reason, samples.detail, topic, payload, received_at, address)
    readings: list[Reading] = []
    rejections: list[Rejection] = []
    for sample in samples:
        _judge_sample(sample, topic, payload, device, received_at, limits, readings, rejections)
    return _new(MessageOutcome, (tuple(readings), tuple(rejections), None))


def _judge_status(
    topic: str, payload: bytes, device: DeviceEntry, received_at: datetime, limits: Limits
) -> MessageOutcome:
    decoded = decode_json(payload)
    if isinstance(decoded, DecodeFailure):
        return _status_rejection(
            decoded.reason, decoded.detail, topic, payload, device, received_at
        )
    if not isinstance(decoded, dict) or not isinstance(decoded.get("online"), bool):
        return _status_rejection(
            RejectReason.INVALID_PAYLOAD,
            'a status is {"online": true|false, "ts": ...}',
            topic,
            payload,
            device,
            received_at,
        )
    # A last will is composed when the device connects, so it may carry no time: the time
    # the broker delivered it is then the best measure of when the device went away.
    ts = received_at
    if "ts" in decoded:
        try:
            ts = parse_ts(decoded["ts"])
        except ValueError as exc:
            return _status_rejection(
                RejectReason.INVALID_TIMESTAMP, str(exc), topic, payload, device, received_at
            )
        if ts > received_at + limits.max_future:
            return _status_rejection(
                RejectReason.FUTURE_TIMESTAMP,
                f"ts {ts.isoformat()} is in the future",
                topic,
                payload,
                device,
                received_at,
            )
    status = StatusUpdate(device.device_id, decoded["online"], ts, received_at)
    return MessageOutcome(status=status)


def _status_rejection(
    reason: RejectReason,
    detail: str,
    topic: str,
    payload: bytes,
    device: DeviceEntry,
    received_at: datetime,
) -> MessageOutcome:
    return MessageOutcome(
        rejections=(_refusal(reason, detail, topic, payload, device, received_at),)
    )


def _judge_sample(
    sample: object,
    topic: str,
    payload: bytes,
    device: DeviceEntry,
    received_at: datetime,
    limits: Limits,
    readings: list[Reading],
    rejections: list[Rejection],
) -> None:
    if not isinstance(sample, dict):
        rejections.append(
            _refusal(
                RejectReason.INVALID_PAYLOAD,
                "a sample is a JSON object",
                topic,
                payload,
                device,
                received_at,
            )
        )
        return
    metrics = sample.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        rejections.append(
            _refusal(
                RejectReason.INVALID_PAYLOAD,
                "a sample has a non-empty 'metrics' object",
                topic,
                payload,
                device,
                received_at,
            )
        )
        return
    try:
        ts = parse_ts(sample.get("ts"))
    except ValueError as exc:
        rejections.append(
            _refusal(RejectReason.INVALID_TIMESTAMP, str(exc), topic, payload, device, received_at)
        )
        return
    late = judge_ts(ts, received_at, limits)
    if late is not None:
        rejections.append(
            _refusal(late.reason, late.detail, topic, payload, device, received_at, ts=ts)
        )
        return
    device_id = device.device_id
    rules = device.metrics
    for metric, raw in metrics.items():
        # judge_metric, unrolled: this loop runs once per reading.
        rule = rules.get(metric)
        if rule is None:
            refused = _unknown_metric(device, metric)
        else:
            judged = judge_value(rule, raw)
            if not isinstance(judged, Refused):
                readings.append(
                    _new(Reading, (device_id, metric, ts, judged.value, judged.text, received_at))
                )
                continue
            refused = _metric_refused(metric, judged)
        rejections.append(
            _refusal(
                refused.reason,
                refused.detail,
                topic,
                payload,
                device,
                received_at,
                refused.metric,
                ts,
            )
        )


def _refusal(
    reason: RejectReason,
    detail: str,
    topic: str,
    payload: bytes,
    device: DeviceEntry,
    received_at: datetime,
    metric: str | None = None,
    ts: datetime | None = None,
) -> Rejection:
    """A refused message, sample or reading of a known device, with the ids it gives."""
    return Rejection(
        reason=reason,
        detail=detail,
        topic=topic,
        received_at=received_at,
        payload=payload,
        park_id=device.park_id,
        device_id=device.device_id,
        metric=metric,
        ts=ts,
    )


def judge_ts(ts: datetime, received_at: datetime, limits: Limits) -> Refused | None:
    """Refuse a measured time too far after receipt or older than the retention."""
    if ts > received_at + limits.max_future:
        return Refused(
            RejectReason.FUTURE_TIMESTAMP,
            f"ts {ts.isoformat()} is more than {limits.max_future} after receipt",
        )
    if ts < received_at - limits.retention:
        return Refused(
            RejectReason.TOO_OLD,
            f"ts {ts.isoformat()} is older than the retention of {limits.retention}",
        )
    return None


@dataclass(frozen=True, slots=True)
class MetricRefused:
    """A refused metric of a device: why, and the name as a dead letter may store it."""

    reason: RejectReason
    detail: str
    metric: str


def judge_metric(device: DeviceEntry, metric: str, raw: object) -> Accepted | MetricRefused:
    """Judge one named metric value of a device against its type."""
    rule = device.metrics.get(metric)
    if rule is None:
        return _unknown_metric(device, metric)
    judged = judge_value(rule, raw)
    if isinstance(judged, Refused):
        return _metric_refused(metric, judged)
    return judged


def _unknown_metric(device: DeviceEntry, metric: str) -> MetricRefused:
    """Refuse a metric the device's type does not have."""
    # Registry names are storable, so only an unknown name needs the check.
    if not storable(metric):
        return MetricRefused(
            RejectReason.UNSTORABLE_TEXT,
            f"metric name {shown(metric)} holds U+0000 or a lone surrogate",
            sanitised(metric),
        )
    return MetricRefused(
        RejectReason.UNKNOWN_METRIC,
        f"type {device.type_id} has no metric {shown(metric)}",
        metric,
    )


def _metric_refused(metric: str, refused: Refused) -> MetricRefused:
    """A refused value of a known metric, its detail naming the metric."""
    return MetricRefused(refused.reason, f"{metric}: {refused.detail}", metric)


class Accepted(NamedTuple):
    """An acceptable value: a state in ``text``, anything else in ``value``."""

    value: float | None
    text: str | None


class Refused(NamedTuple):
    """A refused value and why."""

    reason: RejectReason
    detail: str


def judge_value(rule: MetricRule, raw: object) -> Accepted | Refused:
    """Judge one metric value against its rule."""
    # The common cases first: a known state, a finite float within range.
    if rule.kind is MetricKind.STATE:
        if isinstance(raw, str) and raw in rule.states:
            return _new(Accepted, (None, raw))  # registry states are storable text
    elif isinstance(raw, float) and math.isfinite(raw) and rule.within(raw):
        return _new(Accepted, (raw, None))
    return _judge_other_value(rule, raw)


def _judge_other_value(rule: MetricRule, raw: object) -> Accepted | Refused:
    """Judge a value that is not one of the common cases (most are refused here)."""
    if isinstance(raw, str) and not storable(raw):
        return Refused(
            RejectReason.UNSTORABLE_TEXT, f"{shown(raw)} holds U+0000 or a lone surrogate"
        )
    if rule.kind is MetricKind.STATE:
        if not isinstance(raw, str):
            return Refused(RejectReason.WRONG_KIND, f"a state is a string, got {shown(raw)}")
        return Refused(
            RejectReason.UNKNOWN_STATE, f"{shown(raw)} is not one of {sorted(rule.states)}"
        )
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return Refused(RejectReason.WRONG_KIND, f"a {rule.kind} is a number, got {shown(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        return Refused(RejectReason.NOT_FINITE, f"{shown(raw)} does not fit a double")
    if not math.isfinite(value):
        return Refused(RejectReason.NOT_FINITE, f"{shown(raw)} is not a finite number")
    if not rule.within(value):
        return Refused(
            RejectReason.OUT_OF_RANGE,
            f"{value:g} is outside the valid range [{rule.min_value}, {rule.max_value}]",
        )
    return _new(Accepted, (value, None))
