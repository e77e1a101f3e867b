"""What every parksense process does as it starts: its log level, logging, metrics, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prometheus_client import start_http_server

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def start_logging(
    prog: str, description: str | None, argv: list[str] | None, *, default_level: str = "INFO"
) -> str:
    """Parse the process's one option, ``--log-level``, and log at that level to stderr.

    Returns:
        The level as given (uvicorn wants it in lower case).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--log-level", default=default_level)
    level: str = parser.parse_args(argv).log_level
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    return level


def serve_metrics(port: int | None, logger: logging.Logger) -> None:
    """Serve Prometheus metrics on 127.0.0.1:``port`` (None: not at all)."""
    if port is None:
        return
    start_http_server(port, addr="127.0.0.1")
    logger.info("Metrics on http://127.0.0.1:%d/metrics", port)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets; call it inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
