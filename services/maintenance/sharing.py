"""Share every park's signals on MQTT (retained, QoS 1) and in ``park_signals_1m``.

The topic is ``parksense/v1/{park_id}/signals``; the table is what Grafana reads.

```
standby ──pg_try_advisory_lock──▶ leader ──every check_interval_s──▶ live_bodies (all parks)
   ▲            (every standby_poll_s)          │ ShareSchedule: alarm set changed, or
   └──── connection lost, or a query failed ◀───┘ republish_interval_s since the last ─▶ publish
```
Any number of maintenance processes may run: one leads (it holds a session advisory lock
and computes through that session), the others stand by and take the lock when the
leader's session ends. The body is what ``GET /v1/parks/{park_id}/signals`` answers
(``services.storage.signal_bodies``), with ``as_of`` the moment of the check; each one
shared is also recorded in its park's minute of ``park_signals_1m``. Without an MQTT
credential the leader only records. A park that leaves the registry has its retained
message cleared (an empty retained payload).
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
from services.storage import signal_log
from services.storage.leadership import SIGNALS_PUBLISHER_LOCK, try_lead
from services.storage.registry import RegistryCache
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
        mqtt: MqttSettings | None,
        *,
        online_timeout_s: float,
    ) -> None:
        """Describe the publisher; ``run`` starts it.

        Args:
            conninfo: The database.
            settings: Periods and the signals' window.
            mqtt: The broker and the ``maintenance`` credential; None: the signals are
                only recorded in ``park_signals_1m``, not published.
            online_timeout_s: The online rule's timeout (the API's).
        """
        self._conninfo = conninfo
        self._settings = settings
        self._online_timeout_s = online_timeout_s
        self._mqtt = RetainedPublisher(mqtt, publisher_client_id()) if mqtt else None
        self._schedule = ShareSchedule(settings.republish_interval_s)
        self._epoch = 0
        self._registry = RegistryCache()

    async def run(self, stop: asyncio.Event) -> None:
        """Lead or stand by until ``stop`` is set."""
        if self._mqtt is not None:
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
            if self._mqtt is not None:
                self._mqtt.stop()

    async def _session(self, stop: asyncio.Event) -> None:
        """One database session: stand by until the lock is ours, then publish."""
        async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            while not await try_lead(conn, SIGNALS_PUBLISHER_LOCK):
                if await _wait(stop, self._settings.standby_poll_s):
                    return
            logger.info(
                "Leading: sharing park signals as %s",
                self._mqtt.client_id if self._mqtt else "a recorder only (no MQTT credential)",
            )
            _LEADING.set(1)
            self._schedule.reset()
            while not stop.is_set():
                started = time.monotonic()
                await self._check(conn)
                elapsed = time.monotonic() - started
                if await _wait(stop, max(0.0, self._settings.check_interval_s - elapsed)):
                    return

    async def _check(self, conn: psycopg.AsyncConnection) -> None:
        """Compute every park's signals; record and publish those that are due."""
        epoch = self._mqtt.epoch if self._mqtt is not None else 0
        if epoch != self._epoch:
            # A new broker connection (or its loss): everything is due once it is up.
            self._schedule.reset()
            self._epoch = epoch
        parks = list((await self._registry.current(conn)).parks.values())
        bodies = await live_bodies(
            conn,
            parks,
            as_of=_now(),
            window_s=float(self._settings.signal_window_s),
            online_timeout_s=self._online_timeout_s,
        )
        now_s = time.monotonic()
        due = []
        for body in bodies:
            in_alarm = frozenset(a.device_id for a in body.alarms)
            if self._schedule.due(body.park_id, in_alarm, now_s=now_s):
                due.append(body)
                self._schedule.published(body.park_id, in_alarm, now_s=now_s)
        await signal_log.record(conn, due)
        if self._mqtt is not None and epoch:
            for body in due:
                topic = signals_topic(body.park_id)
                if self._mqtt.publish(topic, body.model_dump_json().encode()):
                    _PUBLISHED.inc()
        for park_id in self._schedule.gone(p.park_id for p in parks):
            if self._mqtt is not None:
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
