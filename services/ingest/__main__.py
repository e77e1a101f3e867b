"""Run the ingest service: ``python -m services.ingest`` or ``parksense ingest``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prometheus_client import start_http_server

from services.config import DatabaseSettings, IngestSettings, MqttSettings
from services.ingest.errors import IngestError
from services.ingest.pipeline import Pipeline

logger = logging.getLogger("services.ingest")


async def _serve(ingest: IngestSettings, database: DatabaseSettings, mqtt: MqttSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Pipeline(ingest, database, mqtt).run(stop)


def main(argv: list[str] | None = None) -> int:
    """Start one ingest worker; settings come from ``PARKSENSE_*`` environment variables."""
    parser = argparse.ArgumentParser(prog="parksense ingest", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ingest = IngestSettings()
    if ingest.metrics_port is not None:
        start_http_server(ingest.metrics_port, addr="127.0.0.1")
        logger.info("Metrics on http://127.0.0.1:%d/metrics", ingest.metrics_port)
    try:
        asyncio.run(_serve(ingest, DatabaseSettings(), MqttSettings()))
    except IngestError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - an expected failure, said in one line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
