"""Share every park's signals on MQTT: ``parksense/v1/{park_id}/signals``, retained, QoS 1.

```
standby ──pg_try_advisory_lock──▶ leader ──every check_interval_s──▶ live_bodies (all parks)
   ▲            (every standby_poll_s)          │ ShareSchedule: alarm set changed, or
   └──── connection lost, or a query failed ◀───┘ republish_interval_s since the last ─▶ publish
```
Any number of maintenance processes may run: one leads (it holds a session advisory lock
and computes through that session), the others stand by and take the lock when the
leader's session ends. The body is what ``GET /v1/parks/{park_id}/signals`` answers
(``services.storage.signal_bodies``), with ``as_of`` the moment of the check. A park that
leaves the registry has its retained message cleared (an empty retained payload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from datetime import UTC, datetime

import psycopg
from prometheus_client import Counter, Gauge

from services.config import MqttSettings, SharingSettings
from services.core.access import CredentialKind, PlatformRole, client_id, username
from services.core.sharing import ShareSchedule
from services.core.topics import signals_topic
from services.maintenance.mqtt import RetainedPublisher
from services.storage import signal_queries
from services.storage.leadership import SIGNALS_PUBLISHER_LOCK, try_lead
from services.storage.signal_bodies import live_bodies

logger = logging.getLogger(__name__)

_PUBLISHED = Counter("parksense_signals_published_total", "Park signal messages published on MQTT")
_LEADING = Gauge("parksense_signals_publisher_leading", "1 while this process publishes signals")


def publisher_client_id() -> str:
    """Return a client id of the maintenance credential unique to this process."""
    user = username(CredentialKind.PLATFORM, PlatformRole.MAINTENANCE.value)
    return client_id(user, f"signals-{os.getpid()}-{secrets.token_hex(3)}")


class SignalsPublisher:
    """Elects itself (or stands by) and publishes the parks' signals while it leads."""

    def __init__(
        self,
        conninfo: str,
        settings: SharingSettings,
        mqtt: MqttSettings,
        *,
        online_timeout_s: float,
    ) -> None:
        """Describe the publisher; ``run`` starts it."""
        self._conninfo = conninfo
        self._settings = settings
        self._online_timeout_s = online_timeout_s
        self._mqtt = RetainedPublisher(mqtt, publisher_client_id())
        self._schedule = ShareSchedule(settings.republish_interval_s)
        self._epoch = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Lead or stand by until ``stop`` is set."""
        self._mqtt.start()
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                except (psycopg.Error, OSError) as exc:
                    logger.warning("Signals publisher lost its database session: %s", exc)
                except Exception:
                    # Atop a long-lived task: log, and stand by again after a pause.
                    logger.exception("Signals publisher failed; standing by again")
                _LEADING.set(0)
                await _wait(stop, self._settings.standby_poll_s)
        finally:
            self._mqtt.stop()

    async def _session(self, stop: asyncio.Event) -> None:
        """One database session: stand by until the lock is ours, then publish."""
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            while not await try_lead(conn, SIGNALS_PUBLISHER_LOCK):
                if await _wait(stop, self._settings.standby_poll_s):
                    return
            logger.info("Leading: publishing park signals as %s", self._mqtt.client_id)
            _LEADING.set(1)
            self._schedule.reset()
            while not stop.is_set():
                started = time.monotonic()
                await self._check(conn)
                elapsed = time.monotonic() - started
                if await _wait(stop, max(0.0, self._settings.check_interval_s - elapsed)):
                    return

    async def _check(self, conn: psycopg.AsyncConnection) -> None:
        """Compute every park's signals and publish those that are due."""
        epoch = self._mqtt.epoch
        if not epoch:
            return  # The broker is away; everything is published again once it is back.
        if epoch != self._epoch:
            self._schedule.reset()
            self._epoch = epoch
        parks = list((await signal_queries.registry(conn)).values())
        bodies = await live_bodies(
            conn,
            parks,
            as_of=_now(),
            window_s=float(self._settings.signal_window_s),
            online_timeout_s=self._online_timeout_s,
        )
        now_s = time.monotonic()
        for body in bodies:
            in_alarm = frozenset(a.device_id for a in body.alarms)
            if not self._schedule.due(body.park_id, in_alarm, now_s=now_s):
                continue
            if self._mqtt.publish(signals_topic(body.park_id), body.model_dump_json().encode()):
                self._schedule.published(body.park_id, in_alarm, now_s=now_s)
                _PUBLISHED.inc()
        for park_id in self._schedule.gone(p.park_id for p in parks):
            # An empty retained message removes the retained one [MQTT-3.3.1-6].
            self._mqtt.publish(signals_topic(park_id), b"")
            logger.info("Park %s left the registry: its retained signals are cleared", park_id)


def _now() -> datetime:
    return datetime.now(UTC)


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; return whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
