"""The MQTT edge (the only paho import in ingest): persistent MQTT 5 session, manual acks.

Callbacks run on our network thread; they only turn a paho message into an immutable
``RawMessage``. Most PUBLISH packets never become paho messages: whole QoS 0/1 ones in the
bytes read ahead are parsed here, straight into ``RawMessage``s (``_ReadAheadClient``),
and only the rest take paho's way. What one read of the socket brought is handed to the
asyncio loop as one list with one ``call_soon_threadsafe``: a wake-up of the loop per
message cost more than judging the message.

Backpressure: MQTT 5 Receive Maximum should bound the unacknowledged messages the broker
sends, but Mosquitto 2.0 honours it only until the first acknowledgements arrive, then
sends its whole queue (seen with 2.0.11: 100 allowed, 900 sent after 100 PUBACKs). So the
consumer holds at most ``max_buffered_messages``: when they are all taken, the network
thread stops reading the socket, which lets TCP push back to the broker, which keeps the
rest queued in the session.

The network loop is ours (paho's ``loop_read``/``loop_write``/``loop_misc``), not
``loop_start``, so that not reading never means not running: PUBACKs and PINGREQs still go
out, and a full buffer no longer blocks a paho callback. Keepalive still needs reading,
though: Mosquitto drops a client it has not heard from for 1.5 keepalives, and paho drops
a connection whose PINGRESP it has not read within one keepalive of the PINGREQ, and a
PINGRESP queues behind the PUBLISH packets we are not reading. So when no slot has come
free for half a keepalive (the database is away: nothing commits) the consumer
disconnects cleanly, and it reconnects only once a slot is free again. A connection that
drops for any reason is likewise re-established only when there is room: a database
outage of any length costs one disconnect and one reconnect, never a reconnect loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.config import IngestSettings, MqttSettings
from services.core.assignment import FactoryKey
from services.core.mqtt_publish import Publish, parse_publishes
from services.ingest import metrics
from services.ingest.errors import BrokerUnavailableError
from services.ingest.subscriptions import Changes, Subscriptions

logger = logging.getLogger(__name__)

# MQTT keepalive (``IngestSettings.keepalive_s``): we send a PINGREQ after that long
# without sending, and Mosquitto drops us after 1.5 times that long without a packet from
# us [MQTT-3.1.2-24]; paho drops a connection whose PINGRESP is that late.
# With no buffer slot free for this share of the keepalive, disconnect cleanly rather than
# let the keepalive fail (paho would drop the connection one keepalive after an unread
# PINGRESP).
PARK_AFTER_KEEPALIVES = 0.5
# The network loop wakes at least this often to send keepalives and notice a stop.
_LOOP_WAKE_S = 1.0
# Packets read in one go before the loop writes (PUBACKs) and pings again.
_READS_PER_ROUND = 1000
# Bytes read from the socket at once (paho asks for a few bytes at a time).
_READ_AHEAD_BYTES = 65536
# A PUBACK: type, remaining length 2, packet id (MQTT 5 §3.4).
_PUBACK = struct.Struct("!BBH")
# Reconnect backoff, doubling from the first to the last.
_RECONNECT_MIN_S = 1.0
_RECONNECT_MAX_S = 10.0
# How long ``stop`` waits for the DISCONNECT to be written.
_STOP_TIMEOUT_S = 5.0
# Filters per SUBSCRIBE or UNSUBSCRIBE packet: a thousand factories' filters in one packet
# would be one large packet the broker must take whole.
_FILTERS_PER_PACKET = 100
# Retain handling 1 [MQTT-3.3.1-10]: retained messages (devices' status) are sent for a new
# subscription only, not again each time an existing one is renewed on a reconnect.
_RETAIN_IF_NEW = 1


class RawMessage(NamedTuple):
    """One received PUBLISH, as the pipeline sees it (a named tuple: one is made a message)."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: float  # wall-clock seconds since the epoch
    epoch: int  # connection number: acks are only valid on the connection that received it


class _ReadAheadClient(mqtt.Client):
    """paho's client, reading the socket in large chunks, parsing most PUBLISHes itself.

    paho 2.x reads a packet with one ``recv`` for its first byte, one for each byte of its
    length and one for the rest: four system calls a telemetry message. This reads up to
    ``_READ_AHEAD_BYTES`` at once and serves paho's small reads from them. Bytes read ahead
    belong to one socket: a new connection starts with none. And paho matches every
    message's topic against the filters of per-topic callbacks (a trie walk, 2-3 % of
    ingest's CPU), which ingest never registers: each message goes to ``on_message``.

    Even so, paho's way through one PUBLISH (``_packet_read``, ``_packet_handle``,
    ``decode_publish`` with its MQTT 5 ``Properties``, an ``MQTTMessage``) took about
    65 µs of CPU, the consumer's whole receive path with it about ten times what it takes
    now (6 µs). So ``read_publishes`` takes the whole QoS 0/1 PUBLISH packets waiting
    in the read-ahead bytes straight from them (``core.mqtt_publish``), when paho is between
    packets; everything else (other packets, QoS 2, a packet not yet read whole, anything
    unusual) goes through paho's ``loop_read`` unchanged, in order.

    Relies on paho 2.x's private ``_sock``, ``_sock_recv``, ``_handle_on_message``,
    ``_packet_queue``, ``_in_packet`` (paho's partial packet: ``command`` 0 between
    packets), ``_in_callback_mutex``, and ``_msgtime_mutex`` with
    ``_last_bytes_received`` (paho's keepalive) and ``time_func`` (pyproject pins
    ``paho-mqtt<3``; ``tests/ingest/test_read_ahead.py`` holds the contract).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - paho's own
        super().__init__(*args, **kwargs)
        self._ahead = b""
        self._ahead_at = 0
        self._ahead_sock: object = None
        # What a read of ``_fill`` met instead of bytes (the end of the stream, an error),
        # with its socket: paho's next read of that socket meets it in turn.
        self._ahead_end: tuple[object, bytes | OSError] | None = None

    @property
    def read_ahead(self) -> bool:
        """Whether bytes already read from the socket wait to be parsed."""
        return self._ahead_at < len(self._ahead) and self._ahead_sock is self._sock

    def ack_all(self, mids: Sequence[int]) -> None:
        """PUBACK each QoS 1 message of ``mids``, in one queued write.

        paho's ``ack`` queues, wakes its socket pair and writes each PUBACK alone (two
        system calls a message); a batch's acks leave here as one packet write, each a
        4-byte PUBACK with no reason code (success, MQTT 5 §3.4.2.1). Relies on paho 2.x's
        private ``_packet_queue``.
        """
        if mids:
            packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
            self._packet_queue(mqtt.PUBACK, packet, 0, 1)

    def read_publishes(self, limit: int, deliver: Callable[[list[Publish]], None]) -> int:
        """Hand up to ``limit`` PUBLISHes read ahead to ``deliver`` at once; return how many.

        Only at a packet boundary of paho's (no partial packet of its own), and only
        packets that are whole in the bytes read ahead; with none left, it reads the
        socket (``_fill``) once first. They count as bytes received for
        paho's keepalive, as its own reads do. ``deliver`` runs under paho's callback
        lock, as ``on_message`` does. With ``manual_ack`` nothing else is owed for a
        QoS 0 or 1 message: its PUBACK goes out with ``ack_all``.
        """
        packet = self._in_packet
        if (
            limit <= 0
            or self._protocol != mqtt.MQTTv5  # the parser reads MQTT 5 packets only
            or packet["command"] != 0  # paho has read a packet's first byte
            or packet["remaining_count"]  # or its length (after a first byte of 0)
            or not (self.read_ahead or self._fill())
        ):
            return 0
        taken, self._ahead_at = parse_publishes(self._ahead, self._ahead_at, limit)
        if taken:
            with self._msgtime_mutex:
                self._last_bytes_received = mqtt.time_func()
            with self._in_callback_mutex:
                deliver(taken)
        return len(taken)

    def message_callback_add(self, sub: str, callback: Any) -> None:  # noqa: ANN401
        """Refused: this client hands every message to ``on_message``."""
        raise NotImplementedError("ingest's client has no per-topic callbacks")

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:  # as paho: a publish meanwhile does not write
                on_message(self, self._userdata, message)

    def _fill(self) -> bool:
        """Read the socket into the spent read-ahead buffer; return whether bytes came.

        Else paho reads first, and takes the first packet of every read its slow way
        (each packet, when they come one at a time). A read that would block leaves
        nothing behind; one that meets the end of the stream or an error leaves it for
        paho's next read, which handles it as if it were its own.
        """
        sock = self._sock
        if sock is None:
            return False
        try:
            chunk = super()._sock_recv(_READ_AHEAD_BYTES)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._ahead_end = (sock, exc)
            return False
        if not chunk:
            self._ahead_end = (sock, chunk)
            return False
        self._ahead, self._ahead_at, self._ahead_sock = chunk, 0, sock
        return True

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.read_ahead:
            if self._ahead_end is not None:
                (sock, end), self._ahead_end = self._ahead_end, None
                if sock is self._sock:
                    if isinstance(end, OSError):
                        raise end
                    return end
            chunk = super()._sock_recv(max(bufsize, _READ_AHEAD_BYTES))
            if len(chunk) <= bufsize:
                return chunk  # b"" (the broker closed the connection) included
            self._ahead, self._ahead_at, self._ahead_sock = chunk, 0, self._sock
        start = self._ahead_at
        self._ahead_at = start + bufsize
        return self._ahead[start : start + bufsize]


class MqttConsumer:
    """A paho client on its own thread, feeding a callback on the asyncio loop."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        ingest_settings: IngestSettings,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[list[RawMessage]], None],
        factories: Iterable[FactoryKey] = (),
        registry_version: int = 0,
    ) -> None:
        """Create the client for the factories of ``registry_version``; ``start`` connects."""
        self._settings = mqtt_settings
        self._ingest = ingest_settings
        self._loop = loop
        self._deliver = deliver
        # Messages of the read in progress, handed to the loop together when it ends.
        self._received: list[RawMessage] = []
        self._epoch = 0
        self._connected = False
        self._paused = False
        self._stopping = False
        self._parked = False
        self._capacity = ingest_settings.max_buffered_messages
        self._held = 0
        self._peak = 0
        self._held_lock = threading.Lock()
        self._full_since: float | None = None
        self._next_attempt = 0.0
        self._reconnect_delay = _RECONNECT_MIN_S
        self._thread: threading.Thread | None = None
        # What this worker subscribes to: changed by ``assign`` on the loop's thread and by
        # the connection callbacks on the network thread, under the lock.
        self._subscriptions_lock = threading.Lock()
        self._subscriptions = Subscriptions(ingest_settings, factories, registry_version)
        # Other threads (acks, released slots, paho queueing a packet) wake the loop here.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.settimeout(0.0)  # non-blocking
        self._wake_w.settimeout(0.0)
        client = _ReadAheadClient(
            CallbackAPIVersion.VERSION2,
            client_id=ingest_settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if mqtt_settings.username:
            password = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
            client.username_pw_set(mqtt_settings.username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        # Set, it also stops paho from writing on the caller's thread (an ack, say).
        client.on_socket_register_write = self._on_register_write
        self._client = client

    @property
    def epoch(self) -> int:
        """The current connection number."""
        return self._epoch

    @property
    def subscribed_version(self) -> int:
        """The last registry version whose filters the broker has acknowledged."""
        return self._subscriptions.subscribed_version

    def assign(self, factories: Iterable[FactoryKey], registry_version: int) -> None:
        """Follow a registry change: subscribe to new factories, then drop removed ones."""
        with self._subscriptions_lock:
            changes = self._subscriptions.assign(factories, registry_version)
            self._send(changes)
            if self._subscriptions.settle():
                self._log_subscribed()
        if changes.subscribe or changes.unsubscribe:
            logger.info(
                "Factories changed: %d filters added, %d removed (%d held)",
                len(changes.subscribe),
                len(changes.unsubscribe),
                self._subscriptions.held,
            )

    def _send(self, changes: Changes) -> None:
        """Subscribe, then unsubscribe (lock held).

        In that order, so that no message finds the session without a subscription while
        a filter is replaced by another that also matches it.
        """
        metrics.SUBSCRIBED_FILTERS.set(self._subscriptions.held)
        options = SubscribeOptions(qos=1, retainHandling=_RETAIN_IF_NEW)
        for chunk in _chunks(sorted(changes.subscribe)):
            _, mid = self._client.subscribe([(f, options) for f in chunk])
            if mid is not None:
                self._subscriptions.sent(mid)
        for chunk in _chunks(sorted(changes.unsubscribe)):
            self._client.unsubscribe(chunk)
        if changes.subscribe or changes.unsubscribe:
            self._wake()

    @property
    def connected(self) -> bool:
        """Whether the session is up."""
        return self._connected

    def start(self, deadline_s: float = 30.0) -> None:
        """Connect (retrying until the deadline) and start the network thread."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho ships no annotations here
        properties.SessionExpiryInterval = self._ingest.session_expiry_s
        properties.ReceiveMaximum = self._ingest.receive_maximum
        give_up = time.monotonic() + deadline_s
        delay = 0.2
        while True:
            try:
                self._client.connect(
                    self._settings.host,
                    self._settings.port,
                    keepalive=self._ingest.keepalive_s,
                    clean_start=False,
                    properties=properties,
                )
                break
            except OSError as exc:
                if time.monotonic() > give_up:
                    raise BrokerUnavailableError(
                        self._settings.host, self._settings.port, str(exc)
                    ) from exc
                logger.warning(
                    "Broker %s:%d not reachable (%s), retrying in %.1f s",
                    self._settings.host,
                    self._settings.port,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def ack(self, mids: list[int], epoch: int) -> int:
        """Send PUBACKs for messages received on connection ``epoch``; returns how many."""
        if epoch != self._epoch or not self._connected:
            return 0
        self._client.ack_all(mids)
        self._wake()
        return len(mids)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0 (as Sparkplug commands are sent); False when not connected."""
        if not self._connected:
            return False
        self._client.publish(topic, payload, qos=0)
        self._wake()
        return True

    @property
    def held(self) -> int:
        """Messages delivered to the pipeline and not yet released."""
        return self._held

    def release(self, messages: int) -> None:
        """Give back buffer slots for messages the pipeline has written (or dropped)."""
        if messages <= 0:
            return
        with self._held_lock:
            self._held -= min(messages, self._held)
        self._wake()

    @property
    def parked(self) -> bool:
        """Whether the consumer disconnected because its buffer stayed full."""
        return self._parked

    def stop_receiving(self) -> None:
        """Stop handing messages to the loop (they stay unacknowledged for redelivery)."""
        self._paused = True

    def stop(self) -> None:
        """Disconnect cleanly (the persistent session stays on the broker)."""
        self._paused = True
        # Stopping before the DISCONNECT goes out, or the network thread could see the
        # closed socket first and reconnect.
        self._stopping = True
        self._client.disconnect()
        self._wake()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S + _LOOP_WAKE_S)

    def _room(self) -> bool:
        # While paused (draining) we still read, so PINGRESPs arrive; PUBLISHes are then
        # ignored unacknowledged and come back on the next connection.
        return self._held + len(self._received) < self._capacity

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        """The network loop: read while there is room; write, ping and reconnect always."""
        stop_by: float | None = None
        while True:
            if self._stopping:
                stop_by = stop_by or time.monotonic() + _STOP_TIMEOUT_S
                if self._client.socket() is None or time.monotonic() > stop_by:
                    return
            try:
                self._round()
            except Exception:  # the thread must outlive any one failure; paho reconnects
                logger.exception("MQTT network loop failed; closing the connection")
                self._client.disconnect()
                time.sleep(_LOOP_WAKE_S)

    def _round(self) -> None:
        client = self._client
        sock: Any = client.socket()
        room = self._room()
        self._track_room(room=room)
        if sock is None:
            self._wait(self._reconnect_wait())
            if not self._stopping and self._room() and time.monotonic() >= self._next_attempt:
                self._reconnect()
            return
        if self._parked_now(room=room):
            return
        readers: list[Any] = [self._wake_r, sock] if room else [self._wake_r]
        writers: list[Any] = [sock] if client.want_write() else []
        # Packets already read ahead are parsed without waiting for the socket.
        parse_ahead = room and client.read_ahead
        try:
            readable, _, _ = select.select(
                readers, writers, [], 0.0 if parse_ahead else _LOOP_WAKE_S
            )
        except (OSError, ValueError):  # the socket closed under us; paho notices below
            readable = []
        if self._wake_r in readable:
            self._drain_wakes()
        if sock in readable or parse_ahead:
            self._read()
        if client.want_write():
            client.loop_write()
        client.loop_misc()

    def _read(self) -> None:
        """Read packets while there is room, then hand what they held to the loop at once."""
        try:
            self._read_packets()
        finally:
            if self._received:
                received, self._received = self._received, []
                with self._held_lock:
                    self._held += len(received)
                    if self._held > self._peak:
                        self._peak = self._held
                        metrics.BUFFER_PEAK.set(self._peak)
                metrics.MESSAGES_DELIVERED.inc(len(received))
                self._loop.call_soon_threadsafe(self._deliver, received)

    def _read_packets(self) -> None:
        """Read packets while there is room: PUBLISHes read ahead at once, else one by one.

        Each packet holds at most one PUBLISH, so taking no more packets than there are
        free slots keeps the buffer within ``max_buffered_messages``.
        """
        client = self._client
        packets = 0
        while packets < _READS_PER_ROUND:
            room = self._capacity - self._held - len(self._received)
            if room <= 0:
                return
            taken = client.read_publishes(min(room, _READS_PER_ROUND - packets), self._on_publishes)
            if taken:
                packets += taken
            elif client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return
            else:
                packets += 1
            if client.read_ahead:
                continue
            sock = client.socket()
            if sock is None or not select.select([sock], [], [], 0)[0]:
                return

    def _track_room(self, *, room: bool) -> None:
        now = time.monotonic()
        if room and self._full_since is not None:
            metrics.BACKPRESSURE_SECONDS.inc(now - self._full_since)
            self._full_since = None
        elif not room and self._full_since is None:
            self._full_since = now

    def _parked_now(self, *, room: bool) -> bool:
        """Disconnect cleanly once no slot has come free for half a keepalive."""
        if room or self._paused or self._full_since is None:
            return False
        park_after_s = self._ingest.keepalive_s * PARK_AFTER_KEEPALIVES
        if time.monotonic() - self._full_since < park_after_s:
            return False
        logger.warning(
            "No buffer space for %.0f s (is the database away?): disconnecting until there"
            " is room; the broker keeps the session's messages",
            park_after_s,
        )
        self._parked = True
        metrics.PARKED.set(1)
        self._client.disconnect()
        self._client.loop_write()
        return True

    def _reconnect_wait(self) -> float:
        if self._stopping:
            return 0.0
        if not self._room():
            return _LOOP_WAKE_S
        return min(_LOOP_WAKE_S, max(0.0, self._next_attempt - time.monotonic()))

    def _wait(self, timeout_s: float) -> None:
        if timeout_s > 0 and select.select([self._wake_r], [], [], timeout_s)[0]:
            self._drain_wakes()

    def _drain_wakes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _reconnect(self) -> None:
        self._next_attempt = time.monotonic() + self._reconnect_delay
        self._reconnect_delay = min(self._reconnect_delay * 2, _RECONNECT_MAX_S)
        try:
            self._client.reconnect()
        except OSError as exc:
            logger.warning(
                "Broker %s:%d not reachable (%s); retrying",
                self._settings.host,
                self._settings.port,
                exc,
            )

    def _on_register_write(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        _sock: Any,  # noqa: ANN401 - paho's socket type
    ) -> None:
        self._wake()

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        flags: mqtt.ConnectFlags,
        reason_code: Any,  # noqa: ANN401 - paho's ReasonCode
        _properties: Any,  # noqa: ANN401 - paho's Properties
    ) -> None:
        if reason_code.is_failure:
            logger.error("Broker refused the connection: %s", reason_code)
            return
        self._epoch += 1
        self._connected = True
        self._reconnect_delay = _RECONNECT_MIN_S
        metrics.CONNECTIONS.inc()
        if self._parked:
            self._parked = False
            metrics.PARKED.set(0)
        logger.info(
            "Connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )
        with self._subscriptions_lock:
            self._send(self._subscriptions.connected())
            if self._subscriptions.settle():
                self._log_subscribed()

    def _log_subscribed(self) -> None:
        metrics.SUBSCRIBED.set(1)
        logger.info(
            "Subscribed as worker %d of %d (%s assignment): %d filters",
            self._ingest.worker_index,
            self._ingest.workers,
            self._ingest.assignment.value,
            self._subscriptions.held,
        )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        mid: int,
        reason_codes: list[Any],
        _properties: Any,  # noqa: ANN401 - paho's Properties
    ) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            # The broker's ACL did not grant a filter: its messages would go unseen.
            logger.error("Broker refused %d filters of subscription %d", len(refused), mid)
            metrics.SUBSCRIPTIONS_REFUSED.inc(len(refused))
        with self._subscriptions_lock:
            if self._subscriptions.answered(mid):
                self._log_subscribed()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        _flags: Any,  # noqa: ANN401 - paho's DisconnectFlags
        reason_code: Any,  # noqa: ANN401 - paho's ReasonCode
        _properties: Any,  # noqa: ANN401 - paho's Properties
    ) -> None:
        self._connected = False
        with self._subscriptions_lock:
            self._subscriptions.disconnected()
        metrics.SUBSCRIBED.set(0)
        if not self._paused and not self._parked:
            logger.warning("Disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(
        self,
        _client: mqtt.Client,
        _userdata: Any,  # noqa: ANN401 - paho's callback signature
        message: mqtt.MQTTMessage,
    ) -> None:
        if self._paused:
            return  # Unacknowledged: the broker sends it again on the next connection.
        self._received.append(
            RawMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                mid=message.mid,
                received_at=time.time(),
                epoch=self._epoch,
            )
        )

    def _on_publishes(self, messages: list[Publish]) -> None:
        """``_on_message`` for the PUBLISHes parsed at once (one read: one receive time)."""
        if self._paused:
            return  # Unacknowledged: the broker sends them again on the next connection.
        received_at = time.time()
        epoch = self._epoch
        # tuple.__new__: a named tuple's own __new__ is a Python function, called a message.
        new = tuple.__new__
        self._received.extend(
            [
                new(RawMessage, (topic, payload, qos, mid, received_at, epoch))
                for topic, payload, qos, mid in messages
            ]
        )


def _chunks(filters: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(filters), _FILTERS_PER_PACKET):
        yield filters[start : start + _FILTERS_PER_PACKET]
