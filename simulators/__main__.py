"""Simulator command line: ``run`` publishes a fleet's telemetry, ``fleet`` prints a demo fleet."""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from schemas.fleet import DeviceType, Factory, Fleet, parse_fleet
from services.config import MqttSettings, StackSettings
from services.core.access import CredentialKind, PlatformRole, client_id_prefix, username
from services.core.calendar import WorkCalendar, calendar_in_force, work_calendar
from services.stack.stack import platform_mqtt_settings
from simulators.fleet import dump_fleet_yaml, generate_demo_fleet
from simulators.history import DEFAULT_SAMPLES_PER_S, Backfill, HistorySite
from simulators.plant import FactorySimulator, factory_rng, factory_seed
from simulators.publisher import Gateway, GatewaySettings, MqttProtocol, OutageSchedule
from simulators.sparkplug_gateway import SparkplugGateway

logger = logging.getLogger("simulators")

PROGRESS_EVERY_S = 10.0
# The --protocol value that makes gateways Sparkplug B edge nodes (simulators/sparkplug_gateway.py).
SPARKPLUG = "sparkplug"
# With --speedup and no --backfill-s, replay this much history before catching up.
DEFAULT_SPEEDUP_BACKFILL_S = 24 * 3600.0
STOP_TIMEOUT_S = 10.0


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m simulators``."""
    # Without a credential in the environment, the local stack's simulator credential.
    mqtt = platform_mqtt_settings(StackSettings().state_dir, PlatformRole.SIMULATOR, MqttSettings())
    parser = argparse.ArgumentParser(
        prog="parksense sim", description="Simulated parksense devices."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="publish realistic telemetry for every device of a fleet")
    run.add_argument("--fleet", required=True, type=Path, help="fleet file (YAML)")
    run.add_argument("--host", default=mqtt.host, help=f"MQTT broker host (default {mqtt.host})")
    run.add_argument("--port", type=int, default=mqtt.port, help=f"broker port ({mqtt.port})")
    run.add_argument("--username", default=mqtt.username)
    run.add_argument(
        "--password",
        default=mqtt.password.get_secret_value() if mqtt.password else None,
        help="broker password (default PARKSENSE_MQTT_PASSWORD)",
    )
    run.add_argument(
        "--protocol",
        choices=[*(p.value for p in MqttProtocol), SPARKPLUG],
        default="5",
        help="MQTT version of the JSON gateways, or 'sparkplug': gateways speak Sparkplug B"
        " (over MQTT 3.1.1; --sparkplug-share says how many, the rest JSON over MQTT 5)",
    )
    run.add_argument(
        "--sparkplug-share",
        type=_share,
        default=1.0,
        help="with --protocol sparkplug, the share of factories that speak it (default 1: all)",
    )
    run.add_argument("--interval-s", type=_positive_float, default=5.0, help="sampling interval")
    run.add_argument(
        "--duration-s", type=_positive_float, default=None, help="stop after (default: SIGTERM)"
    )
    run.add_argument("--seed", type=int, default=7, help="seed of the signal models")
    run.add_argument(
        "--speedup",
        type=_positive_float,
        default=1.0,
        help="simulated time runs this many times faster, starting --backfill-s in the past, "
        "until it reaches the present (timestamps never lie in the future)",
    )
    run.add_argument(
        "--backfill-s",
        type=_non_negative_float,
        default=None,
        help="how far in the past the simulated clock starts (default 0, or 24 h with --speedup)",
    )
    run.add_argument(
        "--history-s",
        type=_non_negative_float,
        default=0.0,
        help="also publish this many seconds of history before the first live sample, beside "
        "the live data, as store-and-forward arrays (default 0; not with --speedup)",
    )
    run.add_argument(
        "--history-rate",
        type=_positive_float,
        default=DEFAULT_SAMPLES_PER_S,
        help=f"history samples per second, whole fleet (default {DEFAULT_SAMPLES_PER_S:g})",
    )
    run.add_argument(
        "--outage-every", type=_positive_float, default=None, help="simulate an outage every N s"
    )
    run.add_argument("--outage-s", type=_positive_float, default=30.0, help="length of an outage")
    run.add_argument(
        "--bad-data-rate",
        type=_non_negative_float,
        default=0.0,
        help="share of samples deliberately corrupted, to exercise dead letters (default 0)",
    )
    run.add_argument(
        "--client-id-prefix",
        default=None,
        help="client ids are this plus the factory id (default: the credential's prefix)",
    )

    fleet = commands.add_parser("fleet", help="print the demo fleet as YAML")
    fleet.add_argument("--parks", type=int, default=3)
    fleet.add_argument("--factories-per-park", type=int, default=4)
    fleet.add_argument("--devices-per-factory", type=int, default=25)
    fleet.add_argument("--seed", type=int, default=7)
    fleet.add_argument("-o", "--output", type=Path, default=None, help="write to a file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator command line; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "fleet":
        return _fleet(args)
    return _run(args)


def _fleet(args: argparse.Namespace) -> int:
    try:
        fleet = generate_demo_fleet(
            args.parks, args.factories_per_park, args.devices_per_factory, args.seed
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - command line output
        return 2
    text = dump_fleet_yaml(fleet)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


@dataclass(slots=True)
class _Site:
    """A factory's simulator, its RNG, its gateway and the makings of its history.

    Sparkplug B edge nodes have no history: Sparkplug has no store-and-forward arrays.
    """

    simulator: FactorySimulator
    rng: random.Random
    gateway: Gateway | SparkplugGateway
    history: HistorySite | None


def _build_sites(fleet: Fleet, args: argparse.Namespace) -> list[_Site]:
    settings = GatewaySettings(
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        protocol=MqttProtocol.V5 if args.protocol == SPARKPLUG else MqttProtocol(args.protocol),
        client_id_prefix=args.client_id_prefix
        or client_id_prefix(args.username or username(CredentialKind.PLATFORM, "simulator")),
    )
    types = fleet.all_device_types()
    sites = []
    factories = [(park, factory) for park in fleet.parks for factory in park.factories]
    # Every n-th factory speaks Sparkplug B, n from the share (1: all of them).
    sparkplug_every = round(1 / args.sparkplug_share) if args.protocol == SPARKPLUG else 0
    for index, (park, factory) in enumerate(factories):
        calendar = work_calendar(calendar_in_force(park.calendar, factory.calendar), park.timezone)
        simulator = FactorySimulator(
            park.id, factory, types, calendar, bad_data_rate=args.bad_data_rate
        )
        if simulator.skipped:
            logger.warning(
                "No model for %d devices of factory %s (custom types): %s",
                len(simulator.skipped),
                factory.id,
                ", ".join(simulator.skipped[:5]),
            )
        if not simulator.device_ids:
            continue
        outage = None
        if args.outage_every is not None:
            phase_s = factory_seed(args.seed, factory.id) % 1000 / 1000 * args.outage_every
            outage = OutageSchedule(args.outage_every, args.outage_s, phase_s)
        sparkplug = bool(sparkplug_every) and index % sparkplug_every == 0
        gateway = _gateway(
            park.id, factory, simulator, types, settings, outage, sparkplug=sparkplug
        )
        history = (
            _history_site(park.id, factory, types, calendar, gateway, args.seed)
            if isinstance(gateway, Gateway)
            else None
        )
        sites.append(_Site(simulator, factory_rng(args.seed, factory.id), gateway, history))
    return sites


def _gateway(
    park_id: str,
    factory: Factory,
    simulator: FactorySimulator,
    types: Mapping[str, DeviceType],
    settings: GatewaySettings,
    outage: OutageSchedule | None,
    *,
    sparkplug: bool,
) -> Gateway | SparkplugGateway:
    """The factory's gateway: JSON (will on its first meter) or a Sparkplug B edge node."""
    if sparkplug:
        kinds = {device.id: device.type for device in factory.devices}
        metrics = {d: list(types[kinds[d]].metrics) for d in simulator.device_ids}
        return SparkplugGateway(park_id, factory.id, metrics, settings)
    meters = [d for d in simulator.device_ids if d in simulator.meters]
    return Gateway(
        park_id,
        factory.id,
        simulator.device_ids,
        settings,
        will_device_id=meters[0] if meters else None,
        outage=outage,
    )


def _history_site(
    park_id: str,
    factory: Factory,
    types: Mapping[str, DeviceType],
    calendar: WorkCalendar | None,
    gateway: Gateway,
    seed: int,
) -> HistorySite:
    """Return a factory's history: its own simulator (same calendar; no restarts, no bad data)."""
    return HistorySite(
        make_simulator=lambda: FactorySimulator(
            park_id, factory, types, calendar, restart_rate_per_h=0.0
        ),
        make_rng=lambda: factory_rng(seed, f"{factory.id}/history"),
        gateway=gateway,
        device_types={d.id: types[d.type] for d in factory.devices if d.type in types},
    )


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("Received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _run(args: argparse.Namespace) -> int:
    try:
        fleet = parse_fleet(args.fleet.read_text(encoding="utf-8"))
        if args.outage_every is not None:
            OutageSchedule(args.outage_every, args.outage_s)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - command line output
        return 2
    if args.history_s and args.speedup != 1:
        print("error: --history-s goes beside live data; --speedup replays", file=sys.stderr)  # noqa: T201
        return 2
    sites = _build_sites(fleet, args)
    if not sites:
        print("error: the fleet has no device the simulator can model", file=sys.stderr)  # noqa: T201
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        _install_signal_handlers(stop)
    for site in sites:
        site.gateway.start()
    devices = sum(len(site.gateway.device_ids) for site in sites)
    print(  # noqa: T201 - progress for the user
        f"Simulating {devices} devices of {len(sites)} factories via {args.host}:{args.port}, "
        f"one sample per device every {args.interval_s:g} s"
        + (f" ({args.speedup:g}x speed-up)" if args.speedup != 1 else ""),
        flush=True,
    )
    backfill = _backfill(sites, args)
    try:
        _loop(sites, args, stop, backfill)
    finally:
        if backfill is not None:
            backfill.stop(STOP_TIMEOUT_S)
        lost = sum(site.gateway.stop(STOP_TIMEOUT_S) for site in sites)
        _print_progress(sites, time.monotonic(), None, backfill, final=True)
        if lost:
            print(f"{lost} samples or messages were not delivered", flush=True)  # noqa: T201
    return 0


def _backfill(sites: list[_Site], args: argparse.Namespace) -> Backfill | None:
    """Return the history to publish beside the live data, or None without --history-s."""
    if not args.history_s:
        return None
    interval = timedelta(seconds=args.interval_s)
    histories = [site.history for site in sites if site.history is not None]
    return Backfill(histories, interval, args.history_s, args.history_rate)


def _loop(
    sites: list[_Site], args: argparse.Namespace, stop: threading.Event, backfill: Backfill | None
) -> None:
    backfill_s = args.backfill_s
    if backfill_s is None:
        backfill_s = DEFAULT_SPEEDUP_BACKFILL_S if args.speedup > 1 else 0.0
    wall_start = time.time()
    started = time.monotonic()
    interval = timedelta(seconds=args.interval_s)
    # Whole seconds keep timestamps tidy; the first sample is at or just before the start.
    sim_start = datetime.fromtimestamp(int(wall_start - backfill_s), UTC)
    next_progress = started + PROGRESS_EVERY_S
    tick = 0
    while not stop.is_set():
        ts = sim_start + tick * interval
        elapsed_sim_s = (ts - sim_start).total_seconds()
        # A sample is due when the sped-up clock reaches it, but never before its own time.
        due = max(wall_start + elapsed_sim_s / args.speedup, ts.timestamp())
        if args.duration_s is not None and due - wall_start >= args.duration_s:
            break
        if stop.wait(max(0.0, due - time.time())):
            break
        stepped = [site.simulator.step(ts, site.rng) for site in sites]
        for site, samples in zip(sites, stepped, strict=True):
            site.gateway.submit(ts, ((s.device_id, s.metrics) for s in samples))
        if tick == 0 and backfill is not None:
            # The history runs up to the first live samples, so it starts after them.
            backfill.start(ts, {s.device_id: s.metrics for samples in stepped for s in samples})
        tick += 1
        now = time.monotonic()
        if now >= next_progress:
            _print_progress(sites, now - started, ts, backfill)
            next_progress = now + PROGRESS_EVERY_S


def _print_progress(
    sites: list[_Site],
    elapsed_s: float,
    ts: datetime | None,
    backfill: Backfill | None,
    *,
    final: bool = False,
) -> None:
    stats = [site.gateway.stats() for site in sites]
    connected = sum(s.connected for s in stats)
    where = f"sim time {ts.isoformat(timespec='seconds')}, " if ts is not None else ""
    prefix = "done: " if final else f"[{elapsed_s:6.0f} s] {where}"
    print(  # noqa: T201 - progress for the user
        f"{prefix}published {sum(s.telemetry_messages for s in stats)} messages / "
        f"{sum(s.readings for s in stats)} readings "
        f"({sum(s.flushed_messages for s in stats)} store-and-forward batches), "
        f"{sum(s.unacked for s in stats)} unacked, {sum(s.buffered for s in stats)} buffered, "
        f"{sum(s.dropped for s in stats)} dropped, {connected}/{len(stats)} gateways connected"
        + (_history_line(backfill) if backfill is not None else ""),
        flush=True,
    )


def _history_line(backfill: Backfill) -> str:
    progress = backfill.progress()
    state = "done" if progress.finished else f"{progress.sent}/{progress.total} samples"
    return f"; history {state}"


if __name__ == "__main__":
    sys.exit(main())
