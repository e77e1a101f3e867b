"""Ingest takes everything under parksense/v1/: unmatched topics are dead letters, not unseen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.config import MqttSettings
from services.core.topics import legacy_subscription_filters
from tests.harness.ingest import (
    IngestProcess,
    LoadFleet,
    Publisher,
    acked_all,
    count_rows,
    dead_letter_messages,
    dead_letter_reasons,
    mqtt_client,
)
from tests.harness.waiting import wait_until


def test_unmatched_topics_are_bad_topic_dead_letters_and_signals_are_ignored(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    worker: IngestProcess,
) -> None:
    """An extra level or unknown channel is a bad_topic; the park's signals topic is acked only."""
    sample = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "metrics": {"temp_c": 20}})
    device_topic = fleet.topic(fleet.device_ids[0])
    unmatched = [
        (f"{device_topic}/extra", sample),
        (device_topic.replace("/telemetry", "/commands"), sample),
        (f"parksense/v1/{fleet.prefix}-only-two/levels", sample),
    ]
    signals = (f"parksense/v1/{fleet.park}/signals", b'{"park_id": "x"}')
    publisher = Publisher(mqtt_settings)
    infos = publisher.publish_all([*unmatched, signals, (device_topic, sample)])
    wait_until(lambda: all(i.is_published() for i in infos), 10)
    publisher.close()
    # The last message stored means every earlier one was judged (one worker, in order).
    wait_until(lambda: count_rows(clean_db, fleet.prefix) == 1, 15)
    wait_until(lambda: acked_all(worker), 15)
    assert dead_letter_messages(clean_db, fleet.prefix) == unmatched
    assert dead_letter_reasons(clean_db, fleet.prefix) == ["bad_topic"] * 3
    assert count_rows(clean_db, fleet.prefix) == 1


def test_a_session_with_the_old_filters_gets_each_message_once(
    fleet: LoadFleet,
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """A persistent session left with the per-channel filters drops them: no double delivery."""
    worker = ingest_factory(share_group=f"g{fleet.prefix}")
    old = mqtt_client(worker.mqtt_settings, worker.client_id)
    subscribed: list[int] = []
    old.on_subscribe = lambda _c, _u, mid, _codes, _p: subscribed.append(mid)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300  # the session outlives this connection
    old.connect(mqtt_settings.host, mqtt_settings.port, clean_start=False, properties=properties)
    old.loop_start()
    filters = legacy_subscription_filters(f"g{fleet.prefix}")
    _, mid = old.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
    wait_until(lambda: mid in subscribed, 10)
    old.disconnect()
    old.loop_stop()
    worker.start()
    refused = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "metrics": {"volts": 1}})
    good = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "metrics": {"temp_c": 20}})
    publisher = Publisher(mqtt_settings)
    infos = publisher.publish_all(
        [(fleet.topic(d), refused) for d in fleet.device_ids[:2]]
        + [(fleet.topic(fleet.device_ids[2]), good)]
    )
    wait_until(lambda: all(i.is_published() for i in infos), 10)
    publisher.close()
    # Mosquitto queues every copy of a message before the next one, so once the last
    # message is stored, any second copy of the first two has been judged too.
    wait_until(lambda: count_rows(clean_db, fleet.prefix) == 1, 15)
    wait_until(lambda: acked_all(worker), 15)
    assert len(dead_letter_messages(clean_db, fleet.prefix)) == 2
