"""Alarms: when a metric's latest value puts its device in alarm, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from schemas.fleet import MetricKind
from services.core.registry import DeviceEntry, MetricRule

# PRODUCT.md's alarm state; a device type may list more in its alarm_states.
FAULT_STATE = "fault"


class AlarmReason(StrEnum):
    """Why a device is in alarm."""

    STATE = "state"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One reading's value: ``text`` for a state metric, ``value`` for any other kind."""

    ts: datetime
    value: float | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Alarm:
    """One reason a device is in alarm: its metric, the value and the bound it crossed."""

    device_id: str
    factory_id: str
    metric: str
    reason: AlarmReason
    ts: datetime
    value: float | None = None
    text: str | None = None
    threshold: float | None = None


def metric_alarm(
    device: DeviceEntry, metric: str, rule: MetricRule, latest: MetricValue
) -> Alarm | None:
    """Return the alarm a metric's latest value raises, if any.

    A state metric alarms on ``fault`` (and on any other state its type lists as an alarm
    state); a gauge alarms outside its thresholds. Counters never alarm.
    """
    if rule.kind is MetricKind.STATE:
        text = latest.text
        if text is not None and (text == FAULT_STATE or text in rule.alarm_states):
            return Alarm(
                device_id=device.device_id,
                factory_id=device.factory_id,
                metric=metric,
                reason=AlarmReason.STATE,
                ts=latest.ts,
                text=text,
            )
        return None
    if rule.kind is not MetricKind.GAUGE or latest.value is None:
        return None
    if rule.alarm_min is not None and latest.value < rule.alarm_min:
        return Alarm(
            device_id=device.device_id,
            factory_id=device.factory_id,
            metric=metric,
            reason=AlarmReason.BELOW_MIN,
            ts=latest.ts,
            value=latest.value,
            threshold=rule.alarm_min,
        )
    if rule.alarm_max is not None and latest.value > rule.alarm_max:
        return Alarm(
            device_id=device.device_id,
            factory_id=device.factory_id,
            metric=metric,
            reason=AlarmReason.ABOVE_MAX,
            ts=latest.ts,
            value=latest.value,
            threshold=rule.alarm_max,
        )
    return None


def can_alarm(rule: MetricRule) -> bool:
    """Return whether a metric can put its device in alarm."""
    if rule.kind is MetricKind.STATE:
        return True
    return rule.kind is MetricKind.GAUGE and (
        rule.alarm_min is not None or rule.alarm_max is not None
    )
