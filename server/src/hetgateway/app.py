"""The gateway app: ``create_app(settings)`` builds a FastAPI app whose lifespan opens one
long-lived Triton client and discovers the served models.

Typical usage::

    app = create_app(load_settings(triton_grpc_url="127.0.0.1:8001"))
    uvicorn.run(app, host="127.0.0.1", port=8080)

Layers: routers (HTTP only) -> ``DataPlane`` (no HTTP) -> ``TritonBackend`` (gRPC). Errors
become answers in ``http_errors``; middleware adds request ids, metrics and the body limits
(size, read deadline).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from hetgateway import __version__
from hetgateway.admission import AdmissionMiddleware
from hetgateway.backend import InferenceBackend
from hetgateway.body_limit import BodySizeLimitMiddleware
from hetgateway.data_plane import DataPlane
from hetgateway.errors import GatewayError
from hetgateway.http_errors import install_error_handlers
from hetgateway.metrics import GatewayMetrics
from hetgateway.model_catalog import ModelCatalog
from hetgateway.openapi import install_openapi
from hetgateway.protection import add_cors, add_protection
from hetgateway.request_context import RequestContextMiddleware
from hetgateway.routers import health, metrics, model_control, models, predict
from hetgateway.settings import GatewaySettings, load_settings
from hetgateway.shutdown_drain import ShutdownDrain
from hetgateway.triton_backend import TritonBackend

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"

_LOG = logging.getLogger(__name__)


ROUTERS = (predict.router, health.router, models.router, model_control.router)
"""The app's routers, predict first: a request is routed by trying routes in this order, and
nearly every request is a prediction. ``metrics.router`` comes last, and only when no metrics
port of its own is set (``hetgateway.metrics_server``)."""
FASTAPI_OPENTELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False}
"""FastAPI's own OpenTelemetry instrumentation, all of it (FastAPI 0.142 and later)."""

BackendFactory = Callable[[GatewaySettings, GatewayMetrics], InferenceBackend]
"""Builds the app's backend in its lifespan, from the settings and the app's metrics."""


def triton_backend(settings: GatewaySettings, metrics: GatewayMetrics) -> InferenceBackend:
    """The production backend: Triton at ``settings.triton_grpc_url``."""
    return TritonBackend(
        settings.triton_grpc_url,
        control_timeout_s=settings.control_timeout_s,
        max_reconnect_backoff_ms=settings.grpc_max_reconnect_backoff_ms,
        refresh_interval_s=settings.triton_replica_check_interval_s,
        release_timeout_s=settings.triton_replica_release_timeout_s,
        on_replica_call=metrics.count_replica_call,
    )


def create_app(
    settings: GatewaySettings | None = None,
    *,
    backend_factory: BackendFactory = triton_backend,
    drain_on_sigterm: bool = False,
) -> FastAPI:
    """A new gateway app; ``settings`` None reads them from the environment;
    ``backend_factory`` builds what it calls (tests pass a fake); ``drain_on_sigterm``: the
    process's SIGTERM drains the app first (``hetgateway.shutdown_drain``; the server runner
    asks for it, an app in a test client is never signalled)."""
    settings = settings if settings is not None else load_settings()
    gateway_metrics = GatewayMetrics()
    drain = ShutdownDrain(drain_s=settings.drain_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = backend_factory(settings, gateway_metrics)
        catalog = ModelCatalog(
            backend,
            repositories=settings.model_repositories,
            default_model=settings.default_model,
        )
        app.state.catalog = catalog  # read by request_metrics for the model label
        plane = app.state.data_plane = DataPlane(
            backend, catalog, settings=settings, metrics=gateway_metrics
        )
        try:
            await catalog.refresh()
            _LOG.info("serving models: %s", ", ".join(sorted(catalog.entries)) or "none")
        except GatewayError as exc:
            _LOG.warning("Triton not reachable at startup (%s); models discovered later", exc)
        if drain_on_sigterm:
            drain.install()
        try:
            yield
        finally:
            await drain.close()
            await plane.close()
            await backend.close()

    app = FastAPI(
        title="hetserve gateway",
        version=__version__,
        description="Image classification with heteroscedastic uncertainty, served by Triton.",
        lifespan=lifespan,
        **fastapi_telemetry(settings),
    )
    app.state.metrics = gateway_metrics
    app.state.drain = drain
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    for router in ROUTERS:
        app.include_router(router)
    if settings.metrics_port is None:  # else served on its own port (metrics_server)
        app.include_router(metrics.router)
    _mount_web_page(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.body_read_timeout_s,
        linger_max_bytes=settings.linger_max_bytes,
        linger_timeout_s=settings.linger_timeout_s,
    )
    app.state.admission = add_protection(app, settings, metrics=gateway_metrics)
    app.add_middleware(RequestContextMiddleware, metrics=gateway_metrics, drain=drain)
    app.add_middleware(  # a 429 costs no other work
        AdmissionMiddleware, gate=app.state.admission, retry_after_s=settings.retry_after_s
    )
    add_cors(app, settings)  # outermost: every answer, a 429 included, carries CORS headers
    install_openapi(app)
    return app


def fastapi_telemetry(settings: GatewaySettings) -> dict[str, Any]:
    """FastAPI's keyword for its built-in OpenTelemetry instrumentation: off unless
    ``settings.opentelemetry`` (the gateway's own metrics are Prometheus, its logs JSON; the
    instrumentation asks for the global providers on every request, even when none is
    configured). Empty for a FastAPI without it (before 0.142), which has none to turn off."""
    if settings.opentelemetry or "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": FASTAPI_OPENTELEMETRY_OFF}


def _mount_web_page(app: FastAPI) -> None:
    """Serve the web page: ``/`` is ``static/index.html``, its files are under ``/static``
    (the page refers to them, and to the API, by relative paths)."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        return
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def root() -> FileResponse:
        return FileResponse(index)
