"""The deploy files (compose, units, env files) pass only settings and modules that exist."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

import services

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
ENV_FILES = [DEPLOY / "deploy.env.example", *sorted((SYSTEMD / "env").glob("*.env"))]


# Modules the deploy files run that another branch is still writing (issue 10): allowed
# to be missing until they land; once present they must be runnable like the others.
def settings_names() -> set[str]:
    """Every PARKSENSE_* variable a settings class of ``services`` reads."""
    for module in pkgutil.walk_packages(services.__path__, "services."):
        importlib.import_module(module.name)
    classes: list[type[BaseSettings]] = []
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("services."):
                classes.append(sub)
    names = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            names.add((prefix + (field.alias or name)).upper())
    return names


def runnable_modules() -> set[str]:
    """The packages of ``services`` that ``python -m`` can run (they have a __main__)."""
    return {
        ".".join(path.relative_to(ROOT).parent.parts)
        for path in (ROOT / "services").rglob("__main__.py")
    }


def compose() -> dict[str, Any]:
    """The compose file, its YAML anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, whether written as a mapping or a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit, repeated keys kept (INI as systemd reads it)."""
    entries = []
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def units() -> list[Path]:
    """The systemd units."""
    return sorted(SYSTEMD.glob("*.service"))


def env_file_names(path: Path) -> set[str]:
    """The variables an env file sets."""
    names = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    return names


def passed_settings() -> dict[str, set[str]]:
    """Every PARKSENSE_* variable the deploy files pass, with where each is set."""
    found: dict[str, set[str]] = {}
    for name, service in compose()["services"].items():
        for var in compose_environment(service):
            found.setdefault(var, set()).add(f"compose {name}")
    for path in ENV_FILES:
        for var in env_file_names(path):
            found.setdefault(var, set()).add(path.name)
    for unit in units():
        for _, key, value in unit_entries(unit):
            if key == "Environment":
                for assignment in shlex.split(value):
                    found.setdefault(assignment.split("=", 1)[0], set()).add(unit.name)
    return {k: v for k, v in found.items() if k.startswith("PARKSENSE_")}


def run_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every process the deploy files start."""
    commands = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["python"]:
            commands.append((f"compose {name}", [str(part) for part in command]))
    for unit in units():
        for _, key, value in unit_entries(unit):
            if key == "ExecStart":
                commands.append((unit.name, shlex.split(value)))
    return commands


def test_every_setting_passed_exists() -> None:
    """Each PARKSENSE_* variable in compose, units and env files is read by a settings class."""
    known = settings_names()
    passed = passed_settings()
    assert "PARKSENSE_INGEST_SHARE_GROUP" in passed  # the parser sees the files at all
    unknown = {var: sorted(where) for var, where in passed.items() if var not in known}
    assert unknown == {}


def test_every_module_run_exists() -> None:
    """Each ``python -m`` module is a runnable package; each script path is a file."""
    runnable = runnable_modules()
    assert {"services.api", "services.ingest", "services.maintenance"} <= runnable
    commands = run_commands()
    assert len(commands) >= 8
    for where, argv in commands:
        if "-m" in argv:
            module = argv[argv.index("-m") + 1]
            assert module in runnable, f"{where} runs {module}, which cannot run"
        else:
            script = argv[1]
            relative = re.sub(r"^/opt/parksense/", "", script)
            assert (ROOT / relative).is_file(), f"{where} runs {script}, which is missing"


def test_the_proxy_forwards_to_every_api_process() -> None:
    """Nginx's upstream lists exactly the compose file's API services."""
    apis = {
        name
        for name, service in compose()["services"].items()
        if service.get("command") == ["python", "-m", "services.api"]
    }
    nginx = (DEPLOY / "proxy" / "nginx.conf").read_text(encoding="utf-8")
    upstream = set(re.findall(r"^\s*server\s+([a-z0-9-]+):8000\b", nginx, re.MULTILINE))
    assert upstream == apis
    assert len(apis) >= 2


def test_ingest_workers_share_one_group_with_their_own_sessions() -> None:
    """Every compose ingest worker is in the shared group with a client id of its own."""
    workers = [
        compose_environment(service)
        for service in compose()["services"].values()
        if service.get("command") == ["python", "-m", "services.ingest"]
    ]
    assert len(workers) >= 2
    assert {w["PARKSENSE_INGEST_SHARE_GROUP"] for w in workers} == {"parksense"}
    ids = [w["PARKSENSE_INGEST_CLIENT_ID"] for w in workers]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("parksense.ingest.") for i in ids)
