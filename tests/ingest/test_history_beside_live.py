"""End to end: the simulator reports live at once and backfills its history beside it."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from schemas.fleet import Device, Factory, Fleet, Park
from schemas.telemetry import status_topic
from services.config import MqttSettings
from services.storage.fleet_store import load_fleet
from simulators.fleet import dump_fleet_yaml
from tests.harness.ingest import REPO, IngestProcess, Publisher, unique_prefix
from tests.harness.waiting import wait_until

HISTORY_TICKS = 720  # --history-s 720 at --interval-s 1
# The newest 600 ticks (RECENT_S) of 4 devices leave first, 2,400 samples; at 200 samples/s
# the two older chunks of 60 ticks follow 12 s later, while live samples go on every second.
HISTORY_RATE = 200
RECENT_TICKS = 600


def fleet(prefix: str) -> Fleet:
    """Return a one-factory fleet with one device of each type."""
    factory = f"{prefix}-f1"
    devices = [
        Device(id=f"{factory}-meter-1", type="power_meter"),
        Device(id=f"{factory}-line-1", type="production_line", capacity_units_per_hour=1200),
        Device(id=f"{factory}-env-1", type="env_sensor"),
        Device(id=f"{factory}-mach-1", type="machine"),
    ]
    park = Park(id=f"{prefix}-park", factories=[Factory(id=factory, devices=devices)])
    return Fleet(parks=[park])


def live_start(log: Path) -> datetime | None:
    """Return the first live tick's time, as the simulator logs it when the history starts."""
    found = re.search(r"ticks before (\S+ \S+), the last", log.read_text(encoding="utf-8"))
    return datetime.fromisoformat(found.group(1)) if found else None


def start_simulator(path: Path, mqtt_settings: MqttSettings, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m simulators run`` with live data every second and history beside it."""
    assert mqtt_settings.username is not None
    assert mqtt_settings.password is not None
    env = {
        **os.environ,
        "PARKSENSE_MQTT_USERNAME": mqtt_settings.username,
        "PARKSENSE_MQTT_PASSWORD": mqtt_settings.password.get_secret_value(),
    }
    argv = [sys.executable, "-m", "simulators", "run", "--fleet", str(path)]
    argv += ["--port", str(mqtt_settings.port), "--interval-s", "1"]
    argv += ["--history-s", str(HISTORY_TICKS), "--history-rate", str(HISTORY_RATE)]
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def clear_statuses(mqtt_settings: MqttSettings, test_fleet: Fleet) -> None:
    """Remove the simulator's retained statuses, which later tests' workers would receive."""
    publisher = Publisher(mqtt_settings)
    try:
        park = test_fleet.parks[0]
        infos = [
            publisher.client.publish(status_topic(park.id, f.id, d.id), b"", qos=1, retain=True)
            for f in park.factories
            for d in f.devices
        ]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        publisher.close()


def history_stored(conninfo: str, devices: list[str], first_ts: datetime, end: datetime) -> int:
    """Return how many (device, tick) pairs of the history are stored."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (device_id, ts)) FROM readings"
            " WHERE device_id = ANY(%s) AND ts >= %s AND ts < %s",
            (devices, first_ts, end),
        ).fetchone()
    return int(row[0]) if row else 0


def test_live_readings_arrive_while_the_history_is_still_being_flushed(
    clean_db: str,
    mqtt_settings: MqttSettings,
    ingest_factory: Callable[..., IngestProcess],
    tmp_path: Path,
) -> None:
    """Live samples lead and go on during the backfill; latest stays live; history is whole."""
    prefix = unique_prefix()
    test_fleet = fleet(prefix)
    devices = [d.id for d in test_fleet.parks[0].factories[0].devices]
    load_fleet(clean_db, test_fleet)
    # Running means the worker has loaded the registry, fleet included.
    ingest_factory().start()
    path = tmp_path / "fleet.yaml"
    path.write_text(dump_fleet_yaml(test_fleet), encoding="utf-8")
    log = tmp_path / "sim.log"
    process = start_simulator(path, mqtt_settings, log)
    try:
        wait_until(lambda: live_start(log), 60, message=log.read_text(encoding="utf-8"))
        start = live_start(log)
        assert start is not None
        first_ts = start - HISTORY_TICKS * timedelta(seconds=1)
        wait_until(
            lambda: (
                history_stored(clean_db, devices, first_ts, start) == HISTORY_TICKS * len(devices)
            ),
            120,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(30)
        clear_statuses(mqtt_settings, test_fleet)
    assert exit_code == 0, log.read_text(encoding="utf-8")
    recent_from = start - RECENT_TICKS * timedelta(seconds=1)
    with psycopg.connect(clean_db) as conn:
        recent_last_received, older_first_received = conn.execute(
            "SELECT max(received_at) FILTER (WHERE ts >= %(recent)s),"
            " min(received_at) FILTER (WHERE ts < %(recent)s)"
            " FROM readings WHERE device_id = ANY(%(devices)s) AND ts < %(start)s",
            {"recent": recent_from, "start": start, "devices": devices},
        ).fetchone() or (None, None)
        live_first_received, history_first_received, history_last_received = conn.execute(
            "SELECT min(received_at) FILTER (WHERE ts >= %(start)s),"
            " min(received_at) FILTER (WHERE ts < %(start)s),"
            " max(received_at) FILTER (WHERE ts < %(start)s)"
            " FROM readings WHERE device_id = ANY(%(devices)s)",
            {"start": start, "devices": devices},
        ).fetchone() or (None, None, None)
        # Live ticks measured after the history began but received before it ended.
        (live_during_history,) = conn.execute(
            "SELECT count(DISTINCT ts) FROM readings WHERE device_id = ANY(%s)"
            " AND ts > %s AND received_at < %s",
            (devices, history_first_received, history_last_received),
        ).fetchone() or (0,)
        behind = conn.execute(
            "SELECT l.device_id, l.metric FROM device_latest l"
            " JOIN (SELECT device_id, metric, max(ts) AS ts FROM readings"
            "       WHERE device_id = ANY(%s) GROUP BY device_id, metric) r"
            " USING (device_id, metric)"
            " WHERE l.ts <> r.ts OR l.ts < %s",
            (devices, start),
        ).fetchall()
        counters = conn.execute(
            "SELECT device_id, metric, array_agg(value ORDER BY ts) FROM readings"
            " WHERE device_id = ANY(%s) AND metric IN ('energy_kwh', 'output_units')"
            " AND ts <= %s GROUP BY device_id, metric",
            (devices, start),
        ).fetchall()
    assert live_first_received is not None
    assert history_first_received is not None
    assert live_first_received <= history_first_received, "the first live sample leads"
    assert live_during_history >= 2, "live samples went on while the history was flushed"
    assert recent_last_received is not None
    assert older_first_received is not None
    assert recent_last_received <= older_first_received, "the newest history leads the rest"
    assert behind == [], "a device's latest value is its newest reading, from the live data"
    assert len(counters) == 2
    for device_id, metric, values in counters:
        # The last value is the first live one: the history runs up into it, step by step.
        steps = [b - a for a, b in itertools.pairwise(values)]
        assert len(values) == HISTORY_TICKS + 1
        assert min(steps) >= 0, f"{device_id} {metric} goes down"
        assert steps[-1] <= 5 * max(steps[:-1]) + 1, f"{device_id} {metric} jumps into live"
