"""Run the API: ``python -m services.api`` or ``parksense api``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from services.access.sync import BrokerSync
from services.api.app import create_app
from services.config import ApiSettings, BrokerAuthSettings, DatabaseSettings, MqttSettings
from services.retention import RetentionSettings


def main(argv: list[str] | None = None) -> int:
    """Serve the API; settings come from ``PARKSENSE_*`` environment variables."""
    parser = argparse.ArgumentParser(prog="parksense api", description=__doc__)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = ApiSettings()
    app = create_app(
        settings,
        DatabaseSettings(),
        maintenance=RetentionSettings(),
        broker_sync=BrokerSync(BrokerAuthSettings(), MqttSettings()),
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level.lower(),
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
