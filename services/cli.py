"""The ``parksense`` command: run the local stack, load fleets, run services and tools."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar, cast

import psycopg
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.access.errors import AccessError
from services.config import ApiSettings, DatabaseSettings, MqttSettings, StackSettings
from services.stack.errors import StackError
from services.stack.state_secrets import local_database
from services.storage.errors import StorageError

if TYPE_CHECKING:
    from services.access.sync import BrokerSync
    from services.stack.stack import Stack
    from services.storage.fleet_store import FleetCounts

logger = logging.getLogger(__name__)

PROG = "parksense"
DEMO_FLEET_FILE = "demo-fleet.yaml"
# A fresh demo reports live from its first second and publishes the last 3 hours of history
# beside it, as store-and-forward arrays at the simulator's bounded history rate (5.6 min
# for the demo fleet, docs/dashboard.md), so the charts fill while every live tile moves.
DEMO_HISTORY_S = 3 * 3600

# Subcommands that hand their arguments, untouched, to another program's main(argv).
PASSTHROUGH = {
    "ingest": ("services.ingest.__main__", "run one ingest worker in the foreground"),
    "api": ("services.api.__main__", "run the HTTP API in the foreground"),
    "maintenance": (
        "services.maintenance.__main__",
        "run the maintenance process (roll-up folding, availability, retention) in the foreground",
    ),
    "sim": ("simulators.__main__", "run the device simulator (see `parksense sim --help`)"),
    "bench": ("tools.bench", "run the load benchmark (see `parksense bench --help`)"),
    "bench-peers": (
        "tools.bench_peers",
        "issue 10's load against parksense and a tuned peer (see `parksense bench-peers --help`)",
    ),
    "screenshot": (
        "tools.screenshot",
        "save a screenshot of the dashboard (see `parksense screenshot --help`)",
    ),
}

_SettingsT = TypeVar("_SettingsT", bound=BaseSettings)
EntryPoint = Callable[[list[str]], int | None]


class CliError(Exception):
    """An expected failure, reported in one line without a traceback."""


# -- settings and helpers -------------------------------------------------------------


class Settings:
    """Every setting the stack commands need, read once from ``PARKSENSE_*`` variables."""

    def __init__(self) -> None:
        """Read the settings.

        Raises:
            CliError: A variable holds an invalid value; the message names the variable.
        """
        self.stack = _read_settings(StackSettings)
        self._db = _read_settings(DatabaseSettings)
        self.mqtt = _read_settings(MqttSettings)
        self.api = _read_settings(ApiSettings)

    @property
    def db(self) -> DatabaseSettings:
        """The database settings, with the local stack's password unless one is given.

        Resolved at each use: ``up`` and ``demo`` make the password while they run.
        """
        return local_database(self.stack.state_dir, self._db)

    def broker_sync(self) -> BrokerSync:
        """Return the sync that puts changes in force at the broker.

        ``PARKSENSE_BROKER_AUTH_DIR`` names a file-based broker's folder; without it, the
        local stack's broker when one was set up here, else none (EMQX reads the database).
        """
        from services.access.sync import BrokerSync  # noqa: PLC0415 - see make_stack
        from services.config import BrokerAuthSettings  # noqa: PLC0415 - same

        auth = _read_settings(BrokerAuthSettings)
        if auth.auth_dir is None:
            stack = self.make_stack()
            if stack.broker.config_file.exists():
                return stack.broker_sync()
            logger.warning(
                "No local broker under %s and PARKSENSE_BROKER_AUTH_DIR is unset: a broker"
                " that reads the database (EMQX) sees the change now, the local stack at"
                " its next `parksense up`",
                stack.state_dir,
            )
        return BrokerSync(auth, self.mqtt)

    def make_stack(self) -> Stack:
        """Return the local stack described by these settings."""
        from services.stack.stack import Stack  # noqa: PLC0415 - keeps `parksense --help` light

        return Stack(self.stack, self._db, self.mqtt, self.api)


def _read_settings(cls: type[_SettingsT]) -> _SettingsT:
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = "; ".join(
            f"{prefix}{'_'.join(str(part) for part in error['loc'])}".upper() + f": {error['msg']}"
            for error in exc.errors()
        )
        raise CliError(f"invalid setting {problems}") from exc


def _out(text: str = "") -> None:
    """Write user-facing output."""
    print(text)  # noqa: T201 - the command's output


def _one_line(exc: BaseException) -> str:
    """Return an exception's message on one line."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()
        )
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _load_entry_point(module_name: str, attribute: str = "main") -> EntryPoint:
    """Import ``module_name`` lazily and return its ``main``.

    Raises:
        CliError: The module is not part of this installation (yet).
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliError(f"{module_name} is not available in this installation") from exc
        raise
    return cast("EntryPoint", getattr(module, attribute))


def _share_local_db_password() -> None:
    """Give a service or tool run in the foreground the local stack's database password.

    It reaches them as ``PARKSENSE_DB_PASSWORD``, as it reaches the services ``up`` starts.
    """
    db = local_database(_read_settings(StackSettings).state_dir, _read_settings(DatabaseSettings))
    if db.password is not None:
        os.environ["PARKSENSE_DB_PASSWORD"] = db.password.get_secret_value()


def _run_passthrough(command: str, rest: list[str]) -> int:
    module_name, _ = PASSTHROUGH[command]
    _share_local_db_password()
    entry = _load_entry_point(module_name)
    result = entry(rest)
    return int(result or 0)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


# -- stack commands -------------------------------------------------------------------


def _cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    stack = settings.make_stack()
    started = stack.up()
    from services.stack.stack import format_status  # noqa: PLC0415 - see Settings.make_stack

    _out(format_status(stack.status()))
    _out()
    _out(f"Started: {', '.join(started)}" if started else "Everything was already running.")
    _out(f"API: {stack.dashboard_url()}")
    return 0


def _cmd_down(settings: Settings, _args: argparse.Namespace) -> int:
    stopped = settings.make_stack().down()
    _out(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")
    return 0


def _cmd_status(settings: Settings, _args: argparse.Namespace) -> int:
    from services.stack.stack import format_status  # noqa: PLC0415 - see Settings.make_stack

    _out(format_status(settings.make_stack().status()))
    return 0


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from services.storage.migrate import apply_migrations  # noqa: PLC0415 - lazy, like all I/O

    applied = apply_migrations(settings.db.conninfo(application_name="parksense-cli"))
    if applied:
        _out("Applied migrations: " + ", ".join(f"{version:04d}" for version in applied))
    else:
        _out("The schema is current.")
    return 0


def _read_fleet_text(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read fleet file {file}: {exc.strerror or exc}") from exc


def _load_fleet_file(settings: Settings, file: str) -> FleetCounts:
    """Validate and load a fleet file; return what was loaded."""
    from schemas.fleet import parse_fleet  # noqa: PLC0415 - lazy, like all subcommands
    from services.access.fleet import load_fleet_in_force  # noqa: PLC0415 - same

    try:
        fleet = parse_fleet(_read_fleet_text(file))
    except ValueError as exc:
        raise CliError(f"invalid fleet file {file}: {_one_line(exc)}") from exc
    return load_fleet_in_force(
        settings.db.conninfo(application_name="parksense-cli"), fleet, settings.broker_sync()
    )


def _fleet_summary(counts: FleetCounts) -> str:
    return (
        f"Loaded fleet version {counts.version}: {counts.parks} parks, "
        f"{counts.factories} factories, {counts.devices} devices, "
        f"{counts.device_types} device types"
    )


def _cmd_fleet_load(settings: Settings, args: argparse.Namespace) -> int:
    _out(_fleet_summary(_load_fleet_file(settings, str(args.file))))
    return 0


def _demo_fleet_options(args: argparse.Namespace) -> dict[str, int]:
    """Return the demo fleet options given on the command line (the rest keep defaults)."""
    return {
        name: getattr(args, name)
        for name in ("parks", "factories_per_park", "devices_per_factory", "seed")
        if getattr(args, name, None) is not None
    }


def _write_demo_fleet(args: argparse.Namespace, output: Path | None = None) -> int:
    """Write the demo fleet (to ``output``, else to stdout); return the exit status.

    The simulator owns the demo fleet; its ``fleet`` command is run by module name, as
    ``sim`` is, so ``services`` never imports ``simulators``. A refused option is reported
    by the simulator, on stderr.
    """
    argv = ["fleet"]
    for name, value in _demo_fleet_options(args).items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    if output is not None:
        argv += ["--output", str(output)]
    return int(_load_entry_point(PASSTHROUGH["sim"][0])(argv) or 0)


def _cmd_fleet_demo(_settings: Settings, args: argparse.Namespace) -> int:
    return _write_demo_fleet(args)


def _history_args(settings: Settings) -> list[str]:
    """Simulator options that fill the last hours of an empty database, so charts show data.

    Only a database without readings is backfilled: a restarted simulator must not write a
    second, differently seeded history over the first.
    """
    import psycopg  # noqa: PLC0415 - only demo needs a database client here

    with psycopg.connect(settings.db.conninfo(application_name="parksense-demo")) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM readings)").fetchone()
    if row is not None and row[0]:
        return []
    logger.info("Live data at once; the last %d h of history beside it", DEMO_HISTORY_S // 3600)
    return ["--history-s", str(DEMO_HISTORY_S)]


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from services.stack.stack import check_installed  # noqa: PLC0415 - see Settings.make_stack

    check_installed()
    stack = settings.make_stack()
    stack.up()
    fleet_file = stack.state_dir / DEMO_FLEET_FILE
    # An existing file is kept (a user may have edited it) unless new options were given.
    if not fleet_file.exists() or _demo_fleet_options(args):
        status = _write_demo_fleet(args, fleet_file)
        if status:
            return status
        logger.info("Wrote the demo fleet to %s", fleet_file)
    logger.info("%s", _fleet_summary(_load_fleet_file(settings, str(fleet_file))))
    if not stack.simulator_running():
        # The load is in force once it returns (ingest checks the fleet version before
        # every write), so the simulator may start at once.
        stack.start_simulator(fleet_file, _history_args(settings))
    _out()
    _out(f"Dashboard:     {stack.dashboard_url()}")
    _out(f"API docs:      {stack.api_docs_url()}")
    _out(f"MQTT broker:   mqtt://{settings.mqtt.host}:{settings.mqtt.port}")
    _out(f"Demo fleet:    {fleet_file}")
    _out("Stop it all with `make down` (or `parksense down`).")
    return 0


def _credential_target(args: argparse.Namespace) -> tuple[str, str]:
    """Return the credential kind and subject named by ``--device``/``--factory``/``--park``."""
    for option, kind in (("device", "device"), ("factory", "gateway"), ("park", "reader")):
        subject = getattr(args, option)
        if subject is not None:
            return kind, subject
    raise CliError("name one of --device, --factory or --park")


def _cmd_credentials_issue(settings: Settings, args: argparse.Namespace) -> int:
    import orjson  # noqa: PLC0415 - lazy, like all subcommands

    from services.access.credentials import issue  # noqa: PLC0415 - same
    from services.core.access import CredentialKind  # noqa: PLC0415 - same
    from services.storage.credentials import UnknownSubjectError  # noqa: PLC0415 - same

    kind, subject = _credential_target(args)
    try:
        issued = issue(
            settings.db.conninfo(application_name="parksense-cli"),
            settings.broker_sync(),
            CredentialKind(kind),
            subject,
        )
    except UnknownSubjectError as exc:
        raise CliError(str(exc)) from exc
    body = {
        "username": issued.username,
        "password": issued.password,
        "client_id_prefix": issued.client_id_prefix,
        "topics": issued.topics,
    }
    _out(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_credentials_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from services.access.credentials import revoke  # noqa: PLC0415 - lazy, like all subcommands
    from services.core.access import CredentialKind  # noqa: PLC0415 - same

    kind, subject = _credential_target(args)
    revoked = revoke(
        settings.db.conninfo(application_name="parksense-cli"),
        settings.broker_sync(),
        CredentialKind(kind),
        subject,
    )
    if not revoked:
        raise CliError(f"{kind} {subject!r} has no credential to revoke")
    _out(f"Revoked the {kind} credential of {subject}; its connections are closed.")
    return 0


# -- API keys -------------------------------------------------------------------------


def _keys_conninfo(settings: Settings) -> str:
    return settings.db.conninfo(application_name="parksense-cli")


def _cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    import orjson  # noqa: PLC0415 - lazy, like all subcommands

    from schemas.access import ApiKeyCreated  # noqa: PLC0415 - same
    from services.storage import api_keys  # noqa: PLC0415 - same

    with psycopg.connect(_keys_conninfo(settings)) as conn:
        issued = api_keys.create_key(conn, args.name, args.scope)
    body = ApiKeyCreated(name=issued.name, scope=issued.scope, key=issued.key)
    # The same JSON as POST /v1/keys; the key is shown this once.
    _out(orjson.dumps(body.model_dump(mode="json")).decode())
    return 0


def _cmd_keys_list(settings: Settings, _args: argparse.Namespace) -> int:
    import orjson  # noqa: PLC0415 - lazy, like all subcommands

    from schemas.access import ApiKeys, ApiKeySummary  # noqa: PLC0415 - same
    from services.storage import api_keys  # noqa: PLC0415 - same

    with psycopg.connect(_keys_conninfo(settings)) as conn:
        found = api_keys.list_keys(conn)
    body = ApiKeys(
        data=[ApiKeySummary(name=k.name, scope=k.scope, created_at=k.created_at) for k in found],
        count=len(found),
        bootstrap_keys=len(settings.api.key_list()),
    )
    _out(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from services.storage import api_keys  # noqa: PLC0415 - lazy, like all subcommands

    with psycopg.connect(_keys_conninfo(settings)) as conn:
        if not api_keys.revoke_key(conn, args.name):
            raise CliError(f"no API key named {args.name!r}")
        left = api_keys.keys_exist(conn)
    _out(f"Revoked API key {args.name}")
    if not left and not settings.api.key_list():
        logger.warning(
            "No API key is left and no bootstrap key is set: the API is now open to callers"
            " on trusted hosts (docs/api.md)"
        )
    return 0


def _key_name(text: str) -> str:
    from schemas.telemetry import ID_PATTERN  # noqa: PLC0415 - lazy

    if re.fullmatch(ID_PATTERN.strip("^$"), text) is None:
        msg = f"{text!r} is not a key name (lower-case letters, digits, - and _; at most 64)"
        raise argparse.ArgumentTypeError(msg)
    return text


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from schemas.access import Scope  # noqa: PLC0415 - lazy

    keys = commands.add_parser("keys", help="create, list and revoke API keys (stored hashed)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key; prints it once, as JSON")
    create.add_argument("--name", required=True, type=_key_name, help="unique name of the key")
    create.add_argument(
        "--scope", required=True, type=Scope, choices=list(Scope), help="read, write or admin"
    )
    actions.add_parser("list", help="list the stored keys (names and scopes, no secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key at once (its sessions end too)")
    revoke.add_argument("name", type=_key_name, help="the key's name")


# -- parser ---------------------------------------------------------------------------


def _add_demo_fleet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parks", type=int, help="number of parks (default 3)")
    parser.add_argument("--factories-per-park", type=int, help="factories in each park")
    parser.add_argument("--devices-per-factory", type=int, help="devices in each factory")
    parser.add_argument("--seed", type=int, help="seed of the generator (same seed, same fleet)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``parksense``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Industry state, sensed on one network: the parksense command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser("up", help="start the local stack (whatever part is not running)")
    commands.add_parser("down", help="stop the local stack")
    commands.add_parser("status", help="show what runs, with pids, addresses and logs")
    demo = commands.add_parser(
        "demo", help="start the stack with a demo fleet and simulator; print the dashboard URL"
    )
    _add_demo_fleet_options(demo)
    commands.add_parser("migrate", help="apply pending database migrations")

    fleet = commands.add_parser("fleet", help="load or generate fleet files (device registry)")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    load = fleet_commands.add_parser("load", help="validate a fleet file and load it")
    load.add_argument("file", help="fleet YAML file, or - for standard input")
    fleet_demo = fleet_commands.add_parser("demo", help="print a generated demo fleet (YAML)")
    _add_demo_fleet_options(fleet_demo)

    credentials = commands.add_parser(
        "credentials", help="issue, rotate or revoke MQTT credentials of devices and gateways"
    )
    credential_commands = credentials.add_subparsers(
        dest="credentials_command", metavar="ACTION", required=True
    )
    for action, help_text in (
        ("issue", "issue (or rotate) a credential; prints it as JSON, the password once"),
        ("revoke", "revoke a credential and close its connections"),
    ):
        sub = credential_commands.add_parser(action, help=help_text)
        target = sub.add_mutually_exclusive_group(required=True)
        target.add_argument("--device", metavar="ID", help="a device's own credential")
        target.add_argument(
            "--factory", metavar="ID", help="the gateway credential of a factory's devices"
        )
        target.add_argument("--park", metavar="ID", help="a park's reader credential (signals)")
    _add_keys_commands(commands)

    for name, (_, help_text) in PASSTHROUGH.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


Handler = Callable[[Settings, argparse.Namespace], int]

HANDLERS: dict[str, Handler] = {
    "up": _cmd_up,
    "down": _cmd_down,
    "status": _cmd_status,
    "demo": _cmd_demo,
    "migrate": _cmd_migrate,
    "fleet load": _cmd_fleet_load,
    "fleet demo": _cmd_fleet_demo,
    "credentials issue": _cmd_credentials_issue,
    "credentials revoke": _cmd_credentials_revoke,
    "keys create": _cmd_keys_create,
    "keys list": _cmd_keys_list,
    "keys revoke": _cmd_keys_revoke,
}


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 1


def _interrupted() -> NoReturn:
    sys.stderr.write(f"{PROG}: interrupted\n")
    raise SystemExit(130)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``parksense``; return its exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        # Pass-through commands take their arguments as they are, options included, so
        # they are dispatched before argparse sees them.
        if args_list and args_list[0] in PASSTHROUGH:
            return _run_passthrough(args_list[0], args_list[1:])
        args = build_parser().parse_args(args_list)
        # Command groups dispatch on "<group> <action>".
        action = getattr(args, f"{args.command}_command", None)
        key = args.command if action is None else f"{args.command} {action}"
        _configure_logging(verbose=args.verbose)
        return HANDLERS[key](Settings(), args)
    except KeyboardInterrupt:
        _interrupted()
    except BrokenPipeError:
        # The reader went away (`parksense status | head`): as the Python docs advise,
        # point stdout at /dev/null so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CliError as exc:
        return _fail(str(exc))
    except (StackError, StorageError, AccessError) as exc:
        return _fail(_one_line(exc))
    except psycopg.OperationalError as exc:
        return _fail(
            f"cannot reach the database (is the stack up? `parksense up`): {_one_line(exc)}"
        )
    except psycopg.Error as exc:
        return _fail(f"database error: {_one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
