"""The gateway's protective middleware (API keys, CORS, the admission gate) and its order.

Typical usage (in ``create_app``)::

    app.add_middleware(BodySizeLimitMiddleware, ...)
    gate = add_protection(app, settings, metrics=gateway_metrics)
    app.add_middleware(RequestContextMiddleware, metrics=gateway_metrics)
    app.add_middleware(AdmissionMiddleware, gate=gate, ...)
    add_cors(app, settings)

Starlette runs the middleware added last first, so a request meets, outermost first:
CORS (only when origins are configured) -> admission control (a 429 costs no other work) ->
request context (id, access log, request metrics) -> API keys (only when keys are
configured) -> body limits (size and read deadline, ``BodySizeLimitMiddleware``) -> routes.
CORS is outermost so that every answer a browser may read carries its headers, a 429 from the
full gate included, and a preflight is answered without a key and without taking a place in
the gate. Other refusals (401, 413, 408) are counted, logged and carry a request id.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from hetgateway.admission import AdmissionGate
from hetgateway.auth import ApiKeyMiddleware, load_api_keys
from hetgateway.metrics import GatewayMetrics
from hetgateway.settings import GatewaySettings

CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "X-API-Key", "X-Request-ID")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")


def cors_origins(settings: GatewaySettings) -> list[str]:
    """The configured CORS origins (comma-separated setting); empty: CORS off."""
    text = settings.cors_origins or ""
    return [origin.strip() for origin in text.split(",") if origin.strip()]


def add_protection(
    app: FastAPI, settings: GatewaySettings, *, metrics: GatewayMetrics
) -> AdmissionGate:
    """Add API keys to ``app`` (see the module docstring for the order); returns the admission
    gate (for ``AdmissionMiddleware``), which keeps its in-flight and refused counts in
    ``metrics``. Raises ``ApiKeyConfigError`` on an unusable key file."""
    gate = AdmissionGate(max_in_flight=settings.max_in_flight, metrics=metrics)
    keys = load_api_keys(
        keys_text=settings.api_keys.get_secret_value() if settings.api_keys else None,
        keys_file=settings.api_keys_file,
    )
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    return gate


def add_cors(app: FastAPI, settings: GatewaySettings) -> None:
    """Add CORS to ``app`` when origins are configured; call it last, so that it is outermost."""
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
        )
