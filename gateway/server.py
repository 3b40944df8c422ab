"""Gateway entry point: ``python -m gateway.server`` serves the Notes API with uvicorn.

Settings come from the environment and fail fast (a missing backend address stops the start).
Uvicorn handles SIGTERM and SIGINT: it stops accepting, lets in-flight requests finish, runs the
lifespan's shutdown (channels closed, engine disposed) and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from common.logs import configure_logging
from common.telemetry import setup_tracing, start_metrics_server
from gateway.app import create_app
from gateway.config import GatewaySettings

log = logging.getLogger(__name__)


def build_server(settings: GatewaySettings) -> uvicorn.Server:
    """A uvicorn server for the app on ``http_host:http_port``, logging through our JSON handler."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        # None keeps the root JSON handler configure_logging installed; uvicorn's access log is
        # off because it writes query strings, which carry patient names (ours does not).
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return uvicorn.Server(config)


def main() -> None:
    """Read settings, configure logging and serve until SIGTERM; exit 1 when start-up fails."""
    try:
        settings = GatewaySettings()
    except ValidationError as exc:
        configure_logging("gateway")
        # Without the input values: they would include the bootstrap key.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        log.error("invalid settings: %s", problems)
        sys.exit(1)
    configure_logging("gateway", settings.log_level)
    stop_tracing = setup_tracing("gateway", settings.otlp_endpoint)
    stop_metrics = start_metrics_server(settings.metrics_port, settings.metrics_host)
    server = build_server(settings)
    # Uvicorn restores the handlers it found and raises the signal again once it has shut down
    # gracefully; finding these, a stop on SIGTERM or SIGINT ends with status 0, not a signal death.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    try:
        server.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        stop_tracing()
    sys.exit(0 if server.started else 1)


def _exit_cleanly(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
