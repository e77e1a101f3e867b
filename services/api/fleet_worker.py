"""Fleet uploads parsed, validated and loaded in worker processes, away from the API's loop.

Reading a 100,000-device YAML file (libyaml's composer) and validating it (pydantic-core)
each hold the GIL for most of a second at a time, which a thread would not hide: every
request and live stream of the API would stall. A process of its own holds its own GIL.
The worker returns the counts or the problem to answer; the database's table lock
(``fleet_store.load_fleet``) keeps two loads from interleaving. Exports (``GET
/v1/fleet``) run in a thread under the same slots, so uploads and exports together hold at
most ``WORKERS`` fleets in memory and database connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import yaml
from pydantic import ValidationError

from schemas.fleet import parse_fleet
from schemas.fleet_text import FleetLimits, FleetTextError, FleetTooLargeError
from services.storage.fleet_store import FleetCounts, load_fleet, read_fleet, registered_devices

logger = logging.getLogger(__name__)

# Uploads handled at once; each worker holds at most one body (fleet_max_bytes) and its
# parse, so this bounds memory, while a bad upload (a bomb) is still refused during a
# long load in the other worker.
WORKERS = 2
# Smaller uploads hold the GIL for a few tens of milliseconds at most: a thread does, and
# saves starting a process (about a second) for the common small fleet.
INLINE_MAX_BYTES = 256 * 1024
# Likewise for exports: up to this many devices are written in a thread (~0.1 s of GIL).
INLINE_MAX_DEVICES = 2000
# PyYAML's C emitter (libyaml) when present: several times faster on a large fleet.
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True, slots=True)
class FleetOutcome:
    """What a worker did: the load's counts, or the problem to answer with."""

    counts: FleetCounts | None = None
    status: int = 200
    title: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_and_load(body: bytes, limits: FleetLimits, conninfo: str) -> FleetOutcome:
    """Parse, validate and load a fleet file (runs in a worker process)."""
    try:
        fleet = parse_fleet(body, limits)
    except FleetTooLargeError as exc:
        return FleetOutcome(status=413, title="Fleet too large", detail=str(exc))
    except FleetTextError as exc:
        return FleetOutcome(
            status=422, title="Invalid fleet", detail=str(exc), extra={"reason": exc.reason}
        )
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return FleetOutcome(
            status=422, title="Invalid fleet", detail=detail, extra={"errors": errors}
        )
    except ValueError as exc:
        return FleetOutcome(status=422, title="Invalid fleet", detail=str(exc))
    return FleetOutcome(counts=load_fleet(conninfo, fleet))


def export_fleet(conninfo: str, *, as_json: bool) -> bytes:
    """Read the registry in one read-only snapshot and write it as a fleet file."""
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        data = read_fleet(conn).model_dump(mode="json", exclude_defaults=True)
    if as_json:
        return orjson.dumps(data)
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text.encode()


class FleetWorkers:
    """A small pool of worker processes, started on first use and stopped with the app."""

    def __init__(self, workers: int = WORKERS) -> None:
        """Prepare the pool (no process starts yet)."""
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(workers)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the API process has threads (the pool's, the loop's) that a
            # forked child would inherit in an undefined state.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self._workers, mp_context=context)
        return self._pool

    async def run(self, body: bytes, limits: FleetLimits, conninfo: str) -> FleetOutcome:
        """Handle one upload in a worker process (a thread for a small one).

        A crashed worker is replaced for the next upload.

        Raises:
            BrokenProcessPool: the worker died (for example killed for memory).
        """
        async with self._slots:
            if len(body) <= INLINE_MAX_BYTES:
                return await asyncio.to_thread(parse_and_load, body, limits, conninfo)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._executor(), parse_and_load, body, limits, conninfo
                )
            except BrokenProcessPool:
                logger.exception("A fleet worker died; starting new ones for the next upload")
                self.close()
                raise

    async def export(self, conninfo: str, *, as_json: bool) -> bytes:
        """Write the registry as a fleet file (YAML, or JSON).

        A small registry is written in a thread, a large one in a worker process (writing
        100,000 devices as YAML holds the GIL for many seconds). It takes one of the upload
        slots, so exports and uploads together hold at most ``WORKERS`` database
        connections and fleets in memory.

        Raises:
            BrokenProcessPool: the worker died (for example killed for memory).
        """
        async with self._slots:
            if await asyncio.to_thread(registered_devices, conninfo) <= INLINE_MAX_DEVICES:
                return await asyncio.to_thread(export_fleet, conninfo, as_json=as_json)
            loop = asyncio.get_running_loop()
            work = functools.partial(export_fleet, conninfo, as_json=as_json)
            try:
                return await loop.run_in_executor(self._executor(), work)
            except BrokenProcessPool:
                logger.exception("A fleet worker died; starting new ones for the next export")
                self.close()
                raise

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
