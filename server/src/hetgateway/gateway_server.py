"""Run the gateway app with uvicorn in this process (blocking until Ctrl-C / SIGTERM)."""

from __future__ import annotations

import uvicorn

from hetgateway.app import create_app
from hetgateway.settings import GatewaySettings

GRACEFUL_SHUTDOWN_S = 5


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    """The uvicorn configuration for the gateway described by ``settings``."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        access_log=False,  # the app writes its own structured access log (request_context)
        log_config=None,  # uvicorn's loggers keep the JSON handler of configure_logging
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        backlog=settings.listen_backlog,
        limit_concurrency=settings.limit_concurrency,
    )


def run_gateway(settings: GatewaySettings) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM and re-raises them after)."""
    uvicorn.Server(uvicorn_config(settings)).run()
