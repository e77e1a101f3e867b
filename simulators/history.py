"""History beside live data: each factory's past hours, flushed as store-and-forward arrays.

A gateway that comes back after an outage reports live at once and flushes its backlog
beside it. The simulator does the same with a span of history before its first live
sample: live samples start at the first second, and the history follows in a background
thread, oldest first, as one JSON array per device and chunk of ticks, at a bounded rate
and with at most a few history messages unacknowledged per gateway, so live samples never
queue behind more than that. Ingest keeps a device's latest value moving forward in
measured time only, so the older history never replaces a live value.

Each factory's history is simulated by its own ``FactorySimulator`` (its own RNG), which
ends where the live one begins. Counters must join without a jump: a counter that went
down would read as a restart (its whole value counted as an increase). So the history is
simulated twice: a first pass finds each counter's value at the first live tick, and the
second pass publishes every counter shifted by the difference to the live value, so the
history's counters run up to the live ones. The history simulator has no counter
restarts (they would be shifted too) and no deliberate bad data.

The first pass keeps the last ``RECENT_S`` of its samples and publishes them at once, each
factory as soon as its pass is done: the live signals' window (5 min by default) and the
counter reading before it are then whole within seconds, and the second pass fills the
older history, oldest first.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.fleet import DeviceType, MetricKind
from schemas.telemetry import TelemetrySample
from simulators.models import Metrics
from simulators.plant import DeviceSample, FactorySimulator, clamp_to_range
from simulators.publisher import Gateway

logger = logging.getLogger(__name__)

# Ticks of history in one array per device: 60 ticks of 5 s are 5 min, about 6 KiB a message.
CHUNK_TICKS = 60
# History messages a gateway may have unacknowledged before more are handed to paho: live
# samples wait behind at most this many (paho sends in order), milliseconds on a local broker.
MAX_UNACKED = 10
# History samples per second for the whole fleet, at most. 3,000 (about 8,700 readings/s)
# is well inside what ingest sustains on two shared cores (docs/benchmarks.md), leaving room
# for the live samples; three hours of the demo fleet took 5.6 min (docs/dashboard.md).
DEFAULT_SAMPLES_PER_S = 3000.0
# History published first, newest part: the signal window (300 s by default) and the
# counter readings just before it, so live rates are whole before the rest arrives.
RECENT_S = 600.0
# How often a waiting history thread looks again at a gateway that has no room.
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class HistorySpan:
    """The history ticks before the first live tick ``live_ts``, ``interval`` apart."""

    live_ts: datetime
    interval: timedelta
    ticks: int

    @classmethod
    def before(cls, live_ts: datetime, interval: timedelta, history_s: float) -> HistorySpan:
        """Return the span of whole intervals within ``history_s`` before ``live_ts``."""
        return cls(live_ts, interval, cls.count(interval, history_s))

    @staticmethod
    def count(interval: timedelta, history_s: float) -> int:
        """Return how many ticks ``interval`` apart fit in ``history_s``."""
        return int(history_s // interval.total_seconds())

    def timestamps(self) -> list[datetime]:
        """Return the history's tick times, oldest first; the last is one interval before live."""
        return [self.live_ts - k * self.interval for k in range(self.ticks, 0, -1)]


@dataclass(frozen=True, slots=True)
class HistorySite:
    """What one factory's history needs: how to build its simulator and RNG, and its gateway."""

    make_simulator: Callable[[], FactorySimulator]
    make_rng: Callable[[], random.Random]
    gateway: Gateway
    # Each device's type, by device id.
    device_types: Mapping[str, DeviceType]


@dataclass(frozen=True, slots=True)
class HistoryProgress:
    """How far the history is: samples handed to the gateways out of all of them."""

    sent: int
    total: int
    finished: bool


Offsets = dict[tuple[str, str], float]
Ticks = list[tuple[datetime, list[DeviceSample]]]


@dataclass(frozen=True, slots=True)
class FirstPass:
    """Each counter's shift, and the last ticks of the history as simulated (unshifted)."""

    offsets: Offsets
    recent: Ticks


def first_pass(
    simulator: FactorySimulator,
    rng: random.Random,
    span: HistorySpan,
    live_first: Mapping[str, Metrics],
    device_types: Mapping[str, DeviceType],
    keep_ticks: int = 0,
) -> FirstPass:
    """Simulate the history through the first live tick; return each counter's shift.

    The shift of a device's counter is its live value at ``span.live_ts`` minus the history
    simulator's value there, so that shifted history counters end one step below live.
    The samples of the last ``keep_ticks`` history ticks are kept.
    """
    recent: Ticks = []
    keep_from = span.ticks - keep_ticks
    for index, ts in enumerate(span.timestamps()):
        samples = simulator.step(ts, rng)
        if index >= keep_from:
            recent.append((ts, samples))
    last = simulator.step(span.live_ts, rng)
    offsets: Offsets = {}
    for sample in last:
        live = live_first.get(sample.device_id, {})
        for metric in _counters(device_types.get(sample.device_id)):
            here, there = sample.metrics.get(metric), live.get(metric)
            if isinstance(here, int | float) and isinstance(there, int | float):
                offsets[(sample.device_id, metric)] = float(there) - float(here)
    return FirstPass(offsets, recent)


def shift_counters(
    metrics: Metrics, device_id: str, offsets: Offsets, device_type: DeviceType | None
) -> Metrics:
    """Return ``metrics`` with each counter moved by its offset (never below zero).

    Whole counters stay whole, decimal ones keep three decimals, as the models round them.
    """
    result = dict(metrics)
    for metric, value in metrics.items():
        offset = offsets.get((device_id, metric))
        if offset is None or isinstance(value, str):
            continue
        moved = max(0.0, value + offset)
        result[metric] = round(moved) if isinstance(value, int) else round(moved, 3)
    return clamp_to_range(result, device_type)


def _counters(device_type: DeviceType | None) -> list[str]:
    if device_type is None:
        return []
    return [m for m, spec in device_type.metrics.items() if spec.kind is MetricKind.COUNTER]


def _chunks(timestamps: Sequence[datetime]) -> Iterator[Sequence[datetime]]:
    for start in range(0, len(timestamps), CHUNK_TICKS):
        yield timestamps[start : start + CHUNK_TICKS]


class Backfill:
    """Publishes every site's history in a background thread, at a bounded rate."""

    def __init__(
        self,
        sites: Sequence[HistorySite],
        interval: timedelta,
        history_s: float,
        samples_per_s: float = DEFAULT_SAMPLES_PER_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare ``history_s`` seconds of history of ``sites``; ``start`` begins it.

        Raises:
            ValueError: ``samples_per_s`` is not positive.
        """
        if samples_per_s <= 0:
            raise ValueError("samples_per_s must be positive")
        self._sites = list(sites)
        self._interval = interval
        self._history_s = history_s
        self._samples_per_s = samples_per_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent = 0
        self._finished = False
        # When the pace lets the next history batch leave (monotonic seconds).
        self._next_s = 0.0
        ticks = HistorySpan.count(interval, history_s)
        self._total = ticks * sum(len(s.gateway.device_ids) for s in self._sites)

    def start(self, live_ts: datetime, live_first: Mapping[str, Metrics]) -> None:
        """Begin, given the first live tick's time and samples (the counters' targets)."""
        span = HistorySpan.before(live_ts, self._interval, self._history_s)
        self._thread = threading.Thread(
            target=self._run, args=(span, dict(live_first)), name="history", daemon=True
        )
        self._thread.start()

    def progress(self) -> HistoryProgress:
        """Return how many history samples were handed to the gateways."""
        return HistoryProgress(self._sent, self._total, self._finished)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the chunk in hand; history not yet sent is not sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, span: HistorySpan, live_first: dict[str, Metrics]) -> None:
        try:
            self._publish(span, live_first)
        except Exception:
            logger.exception("History stopped by an error; live samples go on")
            return
        if not self._stop.is_set():
            self._finished = True
            logger.info("History published: %d samples", self._sent)

    def _publish(self, span: HistorySpan, live_first: dict[str, Metrics]) -> None:
        keep = min(span.ticks, HistorySpan.count(span.interval, RECENT_S))
        logger.info(
            "History of %d ticks before %s, the last %d first", span.ticks, span.live_ts, keep
        )
        plans = []
        for site in self._sites:
            first = first_pass(
                site.make_simulator(), site.make_rng(), span, live_first, site.device_types, keep
            )
            if not self._send(site.gateway, self._batch(site, first.offsets, first.recent)):
                return
            plans.append((site, site.make_simulator(), site.make_rng(), first.offsets))
        logger.info(
            "Publishing the other %d history samples (%d ticks before %s) at most %g samples/s",
            self._total - self._sent,
            span.ticks - keep,
            (span.live_ts - keep * span.interval).isoformat(),
            self._samples_per_s,
        )
        for chunk in _chunks(span.timestamps()[: span.ticks - keep]):
            for site, simulator, rng, offsets in plans:
                ticks = [(ts, simulator.step(ts, rng)) for ts in chunk]
                if not self._send(site.gateway, self._batch(site, offsets, ticks)):
                    return

    def _send(self, gateway: Gateway, batch: dict[str, list[TelemetrySample]]) -> bool:
        """Forward ``batch``, then wait out its share of the rate; return False when stopped."""
        if not self._forward(gateway, batch):
            return False
        samples = sum(len(s) for s in batch.values())
        self._sent += samples
        # No credit is saved up while simulating or waiting for room: a burst never exceeds
        # one batch, so live samples never queue behind history in ingest.
        now = self._clock()
        self._next_s = max(self._next_s, now) + samples / self._samples_per_s
        return not self._stop.wait(self._next_s - now)

    @staticmethod
    def _batch(
        site: HistorySite, offsets: Offsets, ticks: Ticks
    ) -> dict[str, list[TelemetrySample]]:
        batch: dict[str, list[TelemetrySample]] = {}
        for ts, samples in ticks:
            for sample in samples:
                device_type = site.device_types.get(sample.device_id)
                metrics = shift_counters(sample.metrics, sample.device_id, offsets, device_type)
                batch.setdefault(sample.device_id, []).append(
                    TelemetrySample(ts=ts, metrics=dict(metrics))
                )
        return batch

    def _forward(self, gateway: Gateway, batch: dict[str, list[TelemetrySample]]) -> bool:
        """Hand ``batch`` to the gateway as room allows; return False when stopped first."""
        pending = list(batch.items())
        while pending:
            if not gateway.has_backlog_room(MAX_UNACKED):
                if self._stop.wait(_POLL_S):
                    return False
                continue
            device_id, samples = pending[0]
            done = gateway.forward(device_id, samples)
            if done == len(samples):
                pending.pop(0)
            else:
                pending[0] = (device_id, samples[done:])
        return True
