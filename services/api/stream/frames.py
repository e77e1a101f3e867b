"""A park's live state as the stream sees it (a frame), and the events between two frames.

Pure functions over the signals' own results: ``services.core.signals`` decides who is
online and who is in alarm; this module only groups those facts per device and factory and
works out what changed since the previous frame.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import orjson

from services.core import signals as core
from services.core.registry import FactoryInfo

# Changes in one tick above this are sent as one snapshot instead: a mass outage would
# otherwise put hundreds of events in every client's queue at once.
MAX_CHANGES_PER_TICK = 25


class EventName(StrEnum):
    """The ``event:`` field of the stream's events."""

    SIGNALS = "signals"
    SNAPSHOT = "snapshot"
    ALARM = "alarm"
    AVAILABILITY = "availability"
    FACTORIES = "factories"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class AlarmCause:
    """One reason a device is in alarm: its metric, the value and the bound it crossed."""

    metric: str
    reason: str
    ts: datetime
    value: float | None = None
    text: str | None = None
    threshold: float | None = None
    unit: str = ""


@dataclass(frozen=True, slots=True)
class DeviceAlarm:
    """An online device in alarm, with every cause and when the alarm began.

    ``since`` is the first reading of the current run of alarming readings (searched a
    bounded time back), or None when it was not looked up.
    """

    device_id: str
    factory_id: str
    type: str
    causes: tuple[AlarmCause, ...]
    since: datetime | None = None

    @property
    def key(self) -> frozenset[tuple[str, str]]:
        """What makes two alarms of a device the same alarm: its metrics and reasons."""
        return frozenset((c.metric, c.reason) for c in self.causes)


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """A registered device that does not count as online, and since when."""

    device_id: str
    factory_id: str
    type: str
    reason: str
    since: datetime | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class FactoryRow:
    """One factory's share of the park: the park's signals applied to its devices alone."""

    factory_id: str
    name: str
    industry: str
    devices: int
    devices_online: int
    lines: int
    lines_running: int
    lines_in_fault: int
    meters: int
    meters_online: int
    operating: bool
    capacity_utilization: float | None
    power_kw: float
    devices_in_alarm: int
    health_index: float
    scheduled: bool = True


@dataclass(frozen=True, slots=True)
class ParkFrame:
    """What the stream knows about a park at one instant.

    ``signals`` is the JSON of ``GET /v1/parks/{park_id}/signals`` at ``as_of``.
    """

    park_id: str
    as_of: datetime
    signals: bytes
    alarms: Mapping[str, DeviceAlarm] = field(default_factory=dict)
    offline: Mapping[str, DeviceOffline] = field(default_factory=dict)
    factories: tuple[FactoryRow, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One event to send: its name and its JSON payload."""

    event: EventName
    data: bytes


def dumps(payload: object) -> bytes:
    """Encode a payload as the API does: UTC times with ``Z``, dataclasses as objects."""
    return orjson.dumps(payload, option=orjson.OPT_UTC_Z)


def device_alarms(
    alarms: Iterable[core.Alarm],
    types: Mapping[str, str],
    units: Mapping[tuple[str, str], str],
) -> dict[str, DeviceAlarm]:
    """Group the signals' alarms (online devices only) by device.

    Args:
        alarms: the alarms behind ``alarm_rate``, as ``park_signals`` found them.
        types: device id → device type.
        units: (device type, metric) → unit.
    """
    causes: dict[str, list[AlarmCause]] = defaultdict(list)
    factories: dict[str, str] = {}
    for alarm in alarms:
        device_type = types.get(alarm.device_id, "")
        factories[alarm.device_id] = alarm.factory_id
        causes[alarm.device_id].append(
            AlarmCause(
                metric=alarm.metric,
                reason=alarm.reason.value,
                ts=alarm.ts,
                value=alarm.value,
                text=alarm.text,
                threshold=alarm.threshold,
                unit=units.get((device_type, alarm.metric), ""),
            )
        )
    return {
        device_id: DeviceAlarm(
            device_id=device_id,
            factory_id=factories[device_id],
            type=types.get(device_id, ""),
            causes=tuple(sorted(found, key=lambda c: (c.metric, c.reason))),
        )
        for device_id, found in sorted(causes.items())
    }


def offline_devices(
    observations: Sequence[core.DeviceObservation], *, as_of: datetime, online_timeout_s: float
) -> dict[str, DeviceOffline]:
    """Every registered device that is not online at ``as_of``, by the signals' own rule."""
    found: dict[str, DeviceOffline] = {}
    for obs in observations:
        reason = core.offline_reason(obs.last_reading_ts, obs.status, as_of, online_timeout_s)
        if reason is None:
            continue
        last_seen = obs.last_reading_ts
        if reason is core.OfflineReason.LAST_WILL and obs.status is not None:
            since: datetime | None = obs.status.ts
        elif reason is core.OfflineReason.SILENCE:
            since = last_seen
        else:
            since = None
        device = obs.device
        found[device.device_id] = DeviceOffline(
            device_id=device.device_id,
            factory_id=device.factory_id,
            type=device.type_id,
            reason=reason.value,
            since=since,
            last_seen=last_seen,
        )
    return dict(sorted(found.items()))


def factory_rows(
    observations: Sequence[core.DeviceObservation],
    names: Mapping[str, FactoryInfo],
    *,
    as_of: datetime,
    window_s: float,
    online_timeout_s: float,
    planned: Mapping[str, core.FactoryTime] | None = None,
) -> tuple[FactoryRow, ...]:
    """Apply the park signals to each factory's devices alone (every named factory).

    ``scheduled`` says whether the factory's calendar has it on shift at ``as_of``; one off
    shift is not counted as idle (its ``operating`` is false and its rates may be null).
    """
    by_factory: dict[str, list[core.DeviceObservation]] = {factory: [] for factory in names}
    for obs in observations:
        by_factory.setdefault(obs.device.factory_id, []).append(obs)
    rows = []
    for factory_id, members in sorted(by_factory.items()):
        result = core.park_signals(
            members,
            as_of=as_of,
            window_s=window_s,
            online_timeout_s=online_timeout_s,
            planned=planned,
        )
        times = (planned or {}).get(factory_id)
        counts = result.counts
        name = names.get(factory_id, FactoryInfo(factory_id, ""))
        rows.append(
            FactoryRow(
                factory_id=factory_id,
                name=name.name or factory_id,
                industry=name.industry,
                devices=counts.devices_registered,
                devices_online=counts.devices_online,
                lines=counts.lines,
                lines_running=counts.lines_running,
                lines_in_fault=counts.lines_in_fault,
                meters=counts.meters,
                meters_online=counts.meters_online,
                operating=counts.factories_operating > 0,
                capacity_utilization=result.signals.capacity_utilization,
                power_kw=result.signals.power_kw,
                devices_in_alarm=counts.devices_in_alarm,
                health_index=result.signals.health_index,
                scheduled=times is None or times.scheduled_at_end,
            )
        )
    return tuple(rows)


def alarm_payload(park_id: str, as_of: datetime, alarm: DeviceAlarm) -> dict[str, object]:
    """The ``alarm`` event of a device entering (or still in) alarm."""
    return {
        "park_id": park_id,
        "as_of": as_of,
        "device_id": alarm.device_id,
        "factory_id": alarm.factory_id,
        "type": alarm.type,
        "active": True,
        "since": alarm.since,
        "reasons": list(alarm.causes),
    }


def offline_payload(park_id: str, as_of: datetime, device: DeviceOffline) -> dict[str, object]:
    """The ``availability`` event of a device that is offline."""
    return {
        "park_id": park_id,
        "as_of": as_of,
        "device_id": device.device_id,
        "factory_id": device.factory_id,
        "type": device.type,
        "online": False,
        "reason": device.reason,
        "since": device.since,
        "last_seen": device.last_seen,
    }


def snapshot_change(frame: ParkFrame) -> Change:
    """The ``snapshot`` event: every device in alarm and every offline device, now."""
    return Change(
        EventName.SNAPSHOT,
        dumps(
            {
                "park_id": frame.park_id,
                "as_of": frame.as_of,
                "alarms": [
                    alarm_payload(frame.park_id, frame.as_of, a) for a in frame.alarms.values()
                ],
                "offline": [
                    offline_payload(frame.park_id, frame.as_of, d) for d in frame.offline.values()
                ],
            }
        ),
    )


def factories_change(frame: ParkFrame) -> Change:
    """The ``factories`` event: the factory table."""
    return Change(
        EventName.FACTORIES,
        dumps({"park_id": frame.park_id, "as_of": frame.as_of, "factories": list(frame.factories)}),
    )


def signals_change(frame: ParkFrame) -> Change:
    """The ``signals`` event: the same JSON as ``GET /v1/parks/{park_id}/signals``."""
    return Change(EventName.SIGNALS, frame.signals)


def changes(previous: ParkFrame, current: ParkFrame) -> list[Change]:
    """Return the ``alarm`` and ``availability`` events that lead from one frame to the next.

    A device enters alarm (or its causes change), leaves it (back to normal, or it went
    offline and so no longer counts), goes offline (or its reason changes) or comes back.
    More than ``MAX_CHANGES_PER_TICK`` changes are sent as one ``snapshot`` instead.
    """
    park, as_of = current.park_id, current.as_of
    found: list[Change] = []
    for device_id, alarm in current.alarms.items():
        before = previous.alarms.get(device_id)
        if before is None or before.key != alarm.key:
            found.append(Change(EventName.ALARM, dumps(alarm_payload(park, as_of, alarm))))
    for device_id, before in previous.alarms.items():
        if device_id in current.alarms:
            continue
        found.append(
            Change(
                EventName.ALARM,
                dumps(
                    {
                        "park_id": park,
                        "as_of": as_of,
                        "device_id": device_id,
                        "factory_id": before.factory_id,
                        "type": before.type,
                        "active": False,
                        "cleared_by": "offline" if device_id in current.offline else "normal",
                        "since": before.since,
                    }
                ),
            )
        )
    for device_id, device in current.offline.items():
        earlier = previous.offline.get(device_id)
        if earlier is None or earlier.reason != device.reason:
            payload = offline_payload(park, as_of, device)
            found.append(Change(EventName.AVAILABILITY, dumps(payload)))
    for device_id, earlier in previous.offline.items():
        if device_id in current.offline:
            continue
        found.append(
            Change(
                EventName.AVAILABILITY,
                dumps(
                    {
                        "park_id": park,
                        "as_of": as_of,
                        "device_id": device_id,
                        "factory_id": earlier.factory_id,
                        "type": earlier.type,
                        "online": True,
                        "reason": "back_online",
                        "offline_since": earlier.since,
                    }
                ),
            )
        )
    if len(found) > MAX_CHANGES_PER_TICK:
        return [snapshot_change(current)]
    return found
