"""Run the API: ``python -m services.api`` or ``parksense api``."""

from __future__ import annotations

import logging
import sys

import uvicorn

from services.access.sync import BrokerSync
from services.api.app import create_app
from services.api.server import (
    MAX_HEADER_BYTES,
    SecretRedactingFilter,
    header_deadline_protocol,
    log_config,
)
from services.config import ApiSettings, BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.startup import start_logging


def main(argv: list[str] | None = None) -> int:
    """Serve the API; settings come from ``PARKSENSE_*`` environment variables."""
    log_level = start_logging("parksense api", __doc__, argv, default_level="info")
    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretRedactingFilter())
    settings = ApiSettings()
    app = create_app(
        settings,
        DatabaseSettings(),
        broker_sync=BrokerSync(BrokerAuthSettings(), MqttSettings()),
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        log_config=log_config(),
        proxy_headers=False,
        server_header=False,
        http=header_deadline_protocol(settings.header_timeout_s),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.max_concurrency,
        timeout_keep_alive=settings.keep_alive_s,
        # Live streams end at once on SIGTERM (sse-starlette watches uvicorn's exit flag);
        # this bounds what is left, so `make down` never waits for a slow client.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
