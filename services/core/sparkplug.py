"""The Sparkplug B host's state: aliases, seq and bdSeq per edge node, and what each message means.

Every edge node (a factory's gateway) has one ``NodeState``: the bdSeq of the NBIRTH in
force, the newest seq and which of the seqs before it have arrived, when a Rebirth was last
requested, and each born device's alias → metric name map. ``judge_frames`` applies a
batch's messages to the states in arrival order and returns, per message, the readings,
status changes and rejections it becomes, plus the new states and the Rebirth requests to
send. It is pure: the states come from, and go back to, the database in the transaction
that stores the batch (``services/storage/sparkplug_store.py``), so every ingest worker
sees the births any worker committed.

Messages of one edge node may reach two workers (shared subscription), so they may be
applied out of order. A seq is therefore declared lost only once ``SEQ_WINDOW`` newer
seqs have arrived without it; a late one inside the window is simply marked seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.core.readings import Reading, Rejection, RejectReason, StatusReason, StatusUpdate
from services.core.registry import DeviceEntry, Registry
from services.core.sparkplug_payload import (
    BD_SEQ_METRIC,
    CONTROL_PREFIXES,
    SEQ_MODULUS,
    Frame,
    MessageType,
    Metric,
    metric_value,
)
from services.core.text import storable
from services.core.validate import Limits, MetricRefused, judge_metric, judge_ts, parse_ts

# How many newer seqs may arrive before a missing one is declared lost. Larger tolerates
# more reordering between workers (a batch interval's worth of one node's messages) but
# notices a loss later; it must stay below half the seq range so that ahead and behind
# are told apart.
SEQ_WINDOW = 32
_FULL = (1 << SEQ_WINDOW) - 1
# Workers stamp receipt on their own clocks; a DBIRTH applied before its NBIRTH by another
# worker was received at most about this long before it (and normally just after).
BIRTH_SLACK = timedelta(seconds=2)
# At most one Rebirth request per edge node this often: a node needs a moment to rebirth,
# and every message until then would otherwise ask again.
REBIRTH_INTERVAL = timedelta(seconds=5)

NodeKey = tuple[str, str]  # (park_id, factory_id)


@dataclass(frozen=True, slots=True)
class DeviceBirth:
    """What a device's DBIRTH declared: alias → metric name, and each name's data type."""

    born_at: datetime  # when the DBIRTH was received
    seq: int | None = None  # the DBIRTH's seq
    aliases: Mapping[int, str] = field(default_factory=dict)
    datatypes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeState:
    """One edge node as the host knows it."""

    bd_seq: int | None = None  # of the NBIRTH in force; None when none is
    seq: int | None = None  # the newest seq seen
    seen: int = _FULL  # bit i: seq (seq - i) mod 256 has arrived, for i < SEQ_WINDOW
    rebirth_at: datetime | None = None  # when a Rebirth was last requested
    devices: Mapping[str, DeviceBirth] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What one Sparkplug message became."""

    readings: tuple[Reading, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()


@dataclass(frozen=True, slots=True)
class SparkplugOutcome:
    """A batch of Sparkplug messages applied to their edge nodes' states."""

    outcomes: tuple[FrameOutcome, ...]  # one per message, in order
    states: Mapping[NodeKey, NodeState]  # every node the messages named, as it is now
    rebirths: tuple[NodeKey, ...]  # nodes to send a Rebirth request to


def node_key(frame: Frame) -> NodeKey:
    """The edge node a message belongs to."""
    return (frame.address.park_id, frame.address.factory_id)


def observe_seq(state: NodeState, seq: int) -> tuple[NodeState, tuple[int, ...]]:
    """Mark ``seq`` as arrived; return the new state and the seqs now declared lost."""
    if state.seq is None:
        return replace(state, seq=seq, seen=_FULL), ()
    ahead = (seq - state.seq) % SEQ_MODULUS
    if ahead == 0:
        return state, ()  # the same message again (a redelivery)
    if ahead < SEQ_MODULUS // 2:
        newest, seen, lost = state.seq, state.seen, []
        for _ in range(ahead):
            if not (seen >> (SEQ_WINDOW - 1)) & 1:
                lost.append((newest - SEQ_WINDOW + 1) % SEQ_MODULUS)
            seen = (seen << 1) & _FULL
            newest = (newest + 1) % SEQ_MODULUS
        return replace(state, seq=newest, seen=seen | 1), tuple(lost)
    behind = SEQ_MODULUS - ahead
    if behind < SEQ_WINDOW:
        return replace(state, seen=state.seen | (1 << behind)), ()
    return state, ()  # older than the window: already declared lost


def born(state: NodeState, bd_seq: int | None, seq: int, received_at: datetime) -> NodeState:
    """The state after an NBIRTH received at ``received_at``: a new session.

    The births of the session before are dropped. A DBIRTH that another worker applied
    first may belong to the new session (the edge node sends its DBIRTHs right after its
    NBIRTH): one received within ``BIRTH_SLACK`` of the NBIRTH with a seq just after it is
    kept, and its seq counts as seen.
    """

    def same_session(birth: DeviceBirth) -> bool:
        if birth.seq is None or birth.born_at < received_at - BIRTH_SLACK:
            return False
        return 0 < (birth.seq - seq) % SEQ_MODULUS < SEQ_WINDOW

    devices = {k: v for k, v in state.devices.items() if same_session(v)}
    fresh = NodeState(
        bd_seq=bd_seq, seq=seq, seen=_FULL, rebirth_at=state.rebirth_at, devices=devices
    )
    for birth in sorted(devices.values(), key=lambda b: b.born_at):
        if birth.seq is not None:
            fresh, _ = observe_seq(fresh, birth.seq)
    return fresh


def judge_frames(
    states: Mapping[NodeKey, NodeState],
    frames: Sequence[Frame],
    registry: Registry,
    limits: Limits,
) -> SparkplugOutcome:
    """Apply messages, in arrival order, to their edge nodes' states."""
    current = dict(states)
    outcomes: list[FrameOutcome] = []
    rebirths: list[NodeKey] = []
    for frame in frames:
        key = node_key(frame)
        judged = _Judgement(frame, current.get(key, NodeState()), registry, limits)
        outcomes.append(judged.run())
        state = judged.state
        if judged.wants_rebirth and (
            state.rebirth_at is None or frame.received_at - state.rebirth_at >= REBIRTH_INTERVAL
        ):
            state = replace(state, rebirth_at=frame.received_at)
            if key not in rebirths:
                rebirths.append(key)
        current[key] = state
    return SparkplugOutcome(tuple(outcomes), current, tuple(rebirths))


class _Judgement:
    """One message against its edge node's state: the rules in the order they apply."""

    def __init__(self, frame: Frame, state: NodeState, registry: Registry, limits: Limits) -> None:
        self.frame = frame
        self.state = state
        self.registry = registry
        self.limits = limits
        self.wants_rebirth = False
        self.readings: list[Reading] = []
        self.rejections: list[Rejection] = []
        self.statuses: list[StatusUpdate] = []

    def run(self) -> FrameOutcome:
        kind = self.frame.address.message_type
        if kind is MessageType.NBIRTH:
            self.state = born(
                self.state,
                _bd_seq(self.frame),
                (self.frame.seq or 0) % SEQ_MODULUS,
                self.frame.received_at,
            )
        elif kind is MessageType.NDEATH:
            self._node_death()
        else:
            self._sequenced(kind)
        return FrameOutcome(tuple(self.readings), tuple(self.rejections), tuple(self.statuses))

    def _sequenced(self, kind: MessageType) -> None:
        if self.state.bd_seq is None and kind is not MessageType.DBIRTH:
            # Data from a node whose NBIRTH this host has not seen (it was born before
            # ingest started, or its birth was lost): ask for one. Not for a DBIRTH, which
            # another worker may have applied just before its NBIRTH.
            self.wants_rebirth = True
        seq = self.frame.seq
        if seq is None or not 0 <= seq < SEQ_MODULUS:
            self._refuse(RejectReason.INVALID_PAYLOAD, f"a {kind.value} carries a seq, 0 to 255")
        else:
            self._observe(seq)
        if kind is MessageType.NDATA:
            return  # the gateway's own metrics are not a registered device's readings
        device = self._device()
        if device is None:
            return
        if kind is MessageType.DBIRTH:
            self._device_birth(device)
        elif kind is MessageType.DDEATH:
            self._device_death(device)
        else:
            birth = self.state.devices.get(device.device_id)
            if birth is None:
                self.wants_rebirth = True  # data from a device with no DBIRTH in force
            self._device_data(device, birth)

    def _observe(self, seq: int) -> None:
        self.state, lost = observe_seq(self.state, seq)
        for missing in lost:
            self.wants_rebirth = True
            self._refuse(
                RejectReason.SEQ_GAP,
                f"seq {missing} never arrived ({SEQ_WINDOW} newer seqs have, up to {seq})",
            )

    def _node_death(self) -> None:
        bd_seq = _bd_seq(self.frame)
        if self.state.bd_seq is None or bd_seq != self.state.bd_seq:
            return  # the will of an earlier session, arriving after a newer birth
        ts = self._status_ts()
        for device_id in sorted(self.state.devices):
            self.statuses.append(
                StatusUpdate(
                    device_id,
                    online=False,
                    ts=ts,
                    received_at=self.frame.received_at,
                    reason=StatusReason.DEATH,
                )
            )
        self.state = NodeState(rebirth_at=self.state.rebirth_at)

    def _device(self) -> DeviceEntry | None:
        address = self.frame.address
        device = self.registry.devices.get(address.device_id or "")
        if device is None:
            self._refuse(
                RejectReason.UNKNOWN_DEVICE, f"device {address.device_id!r} is not registered"
            )
            return None
        if (device.park_id, device.factory_id) != (address.park_id, address.factory_id):
            self._refuse(
                RejectReason.TOPIC_MISMATCH,
                f"device {device.device_id!r} is registered in "
                f"{device.park_id}/{device.factory_id}, not "
                f"{address.park_id}/{address.factory_id}",
            )
            return None
        return device

    def _device_birth(self, device: DeviceEntry) -> None:
        aliases: dict[int, str] = {}
        datatypes: dict[str, int] = {}
        for metric in self.frame.metrics:
            if metric.name is None or not storable(metric.name):
                continue  # refused as a reading below; the state holds storable text only
            if metric.alias is not None:
                aliases[metric.alias] = metric.name
            if metric.datatype is not None:
                datatypes[metric.name] = metric.datatype
        birth = DeviceBirth(self.frame.received_at, self.frame.seq, aliases, datatypes)
        self.state = replace(self.state, devices={**self.state.devices, device.device_id: birth})
        self.statuses.append(
            StatusUpdate(
                device.device_id,
                online=True,
                ts=self._status_ts(),
                received_at=self.frame.received_at,
                reason=StatusReason.BIRTH,
            )
        )
        self._device_data(device, birth)

    def _device_death(self, device: DeviceEntry) -> None:
        devices = {k: v for k, v in self.state.devices.items() if k != device.device_id}
        self.state = replace(self.state, devices=devices)
        self.statuses.append(
            StatusUpdate(
                device.device_id,
                online=False,
                ts=self._status_ts(),
                received_at=self.frame.received_at,
                reason=StatusReason.DEATH,
            )
        )

    def _device_data(self, device: DeviceEntry, birth: DeviceBirth | None) -> None:
        for metric in self.frame.metrics:
            name = metric.name
            if name is None and metric.alias is not None and birth is not None:
                name = birth.aliases.get(metric.alias)
            if name is None:
                self.wants_rebirth = True
                self._refuse(
                    RejectReason.UNKNOWN_ALIAS,
                    f"alias {metric.alias} is not declared by a DBIRTH of {device.device_id}"
                    " in force",
                )
                continue
            if metric.value is None or name == BD_SEQ_METRIC or name.startswith(CONTROL_PREFIXES):
                continue  # a null value (declared, not measured) or a control: no reading
            self._reading(device, name, metric, birth)

    def _reading(
        self, device: DeviceEntry, name: str, metric: Metric, birth: DeviceBirth | None
    ) -> None:
        ts_ms = metric.ts_ms if metric.ts_ms is not None else self.frame.ts_ms
        if ts_ms is None:
            self._refuse(RejectReason.INVALID_TIMESTAMP, "no metric or payload timestamp", name)
            return
        try:
            ts = parse_ts(ts_ms)
        except ValueError as exc:
            self._refuse(RejectReason.INVALID_TIMESTAMP, str(exc), name)
            return
        late = judge_ts(ts, self.frame.received_at, self.limits)
        if late is not None:
            self._refuse(late.reason, late.detail, name, ts)
            return
        datatype = metric.datatype
        if datatype is None and birth is not None:
            datatype = birth.datatypes.get(name)
        value = metric_value(metric.value, datatype)
        if isinstance(value, bytes):
            self._refuse(RejectReason.WRONG_KIND, f"{name}: bytes are no metric value", name, ts)
            return
        judged = judge_metric(device, name, value)
        if isinstance(judged, MetricRefused):
            self._refuse(judged.reason, judged.detail, judged.metric, ts)
            return
        self.readings.append(
            Reading(device.device_id, name, ts, judged.value, judged.text, self.frame.received_at)
        )

    def _status_ts(self) -> datetime:
        """When a birth or death happened: its payload time, never before its receipt.

        Status only moves forward in time (as JSON status messages do), so a death must not
        date before the readings it follows, nor a birth before the death it follows.
        """
        received = self.frame.received_at
        if self.frame.ts_ms is None:
            return received
        try:
            ts = parse_ts(self.frame.ts_ms)
        except ValueError:
            return received
        if judge_ts(ts, received, self.limits) is not None:
            return received
        return max(ts, received)

    def _refuse(
        self,
        reason: RejectReason,
        detail: str,
        metric: str | None = None,
        ts: datetime | None = None,
    ) -> None:
        address = self.frame.address
        self.rejections.append(
            Rejection(
                reason=reason,
                detail=detail,
                topic=self.frame.topic,
                received_at=self.frame.received_at,
                payload=self.frame.payload,
                park_id=address.park_id,
                device_id=address.device_id,
                metric=metric,
                ts=ts,
            )
        )


def _bd_seq(frame: Frame) -> int | None:
    """The bdSeq metric of an NBIRTH or NDEATH, when it carries one in range (0 to 255)."""
    for metric in frame.metrics:
        value = metric.value
        if metric.name == BD_SEQ_METRIC and isinstance(value, int) and not isinstance(value, bool):
            return value if 0 <= value < SEQ_MODULUS else None
    return None
