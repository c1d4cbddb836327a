"""Run the gateway app with uvicorn (blocking until Ctrl-C / SIGTERM), in this process or in
several worker processes.

Typical usage::

    run_gateway(load_settings(port=8080))              # one process (workers unset or 1)
    run_gateway(load_settings(port=8080, workers=4))   # 4 worker processes on one port

Workers: the parent binds the port once and starts ``settings.workers`` processes (uvicorn's
``Multiprocess`` supervisor, the ``spawn`` start method) that accept on that one socket, so
the kernel spreads connections over them. Each worker builds its own app from the same
settings (``worker_app``): its own Triton channel, catalog, admission gate and JSON logs. The
metrics are summed over the workers (``PROMETHEUS_MULTIPROC_DIR``, a temporary directory the
parent makes and removes; see ``hetgateway.metrics``). The parent restarts a worker that dies;
on SIGINT or SIGTERM it sends SIGTERM to every worker, waits for them and returns.

Shutdown, in one process or in each worker: SIGTERM drains first (``/readyz`` 503, answers
close their connections, requests still served for ``settings.drain_s``; see
``hetgateway.shutdown_drain``), then uvicorn stops accepting and waits up to
``settings.shutdown_timeout_s`` for the requests in flight. SIGINT skips the drain.

Metrics port (``settings.metrics_port``): served by the parent from every worker's files, or
by the only process from its app's registry (``hetgateway.metrics_server``), for as long as
the gateway runs.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from hetgateway.app import create_app
from hetgateway.logging_config import configure_logging
from hetgateway.metrics import MULTIPROCESS_DIR_ENV, multiprocess_registry
from hetgateway.metrics_server import serving_metrics
from hetgateway.settings import GatewaySettings


def uvicorn_config(
    settings: GatewaySettings, *, app_factory: Callable[[], FastAPI] | None = None
) -> uvicorn.Config:
    """The uvicorn configuration for the gateway described by ``settings``; with
    ``app_factory``, uvicorn builds the app by calling it (in each worker) instead of
    receiving one built here."""
    return uvicorn.Config(
        app_factory if app_factory is not None else create_app(settings, drain_on_sigterm=True),
        factory=app_factory is not None,
        workers=settings.workers or 1,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        access_log=False,  # the app writes its own structured access log (request_context)
        log_config=None,  # uvicorn's loggers keep the JSON handler of configure_logging
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        backlog=settings.listen_backlog,
        limit_concurrency=settings.limit_concurrency,
    )


def run_gateway(settings: GatewaySettings) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM); ``settings.workers`` above 1
    serves from that many worker processes (see the module docstring)."""
    if (settings.workers or 1) == 1:
        config = uvicorn_config(settings)
        with serving_metrics(settings, config.app.state.metrics.exposed_registry):
            uvicorn.Server(config).run()
        return
    with _multiprocess_metrics(), serving_metrics(settings, multiprocess_registry()):
        config = uvicorn_config(settings, app_factory=functools.partial(worker_app, settings))
        Multiprocess(config, sockets=[config.bind_socket()]).run()


def worker_app(settings: GatewaySettings) -> FastAPI:
    """A worker's app (called in the worker process, which starts with a fresh interpreter):
    the JSON logs configured as the parent's, then ``create_app``."""
    configure_logging(level=settings.log_level.upper())
    return create_app(settings, drain_on_sigterm=True)


@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """``PROMETHEUS_MULTIPROC_DIR`` set to a fresh directory while the workers run (they
    inherit the environment), removed afterwards."""
    previous = os.environ.get(MULTIPROCESS_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="hetserve-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR_ENV] = directory
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(MULTIPROCESS_DIR_ENV, None)
            else:
                os.environ[MULTIPROCESS_DIR_ENV] = previous
