"""The gateway's protective middleware, installed in one call in a fixed order.

Typical usage (in ``create_app``, between the body limit and the request metrics)::

    app.add_middleware(BodySizeLimitMiddleware, ...)
    gate = add_protection(app, settings)
    app.add_middleware(RequestMetricsMiddleware, ...)
    app.add_middleware(RequestContextMiddleware)

Starlette runs the middleware added last first, so a request meets, outermost first: request
context (id, access log) -> request metrics -> CORS (only when origins are configured) ->
API keys (only when keys are configured) -> admission control -> body-read deadline -> body
limit -> routes. Refusals (401, 429, 408) are therefore counted, logged and carry a request id,
and a CORS preflight is answered without a key.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from hetgateway.admission import AdmissionGate, AdmissionMiddleware
from hetgateway.auth import ApiKeyMiddleware, load_api_keys
from hetgateway.body_read_timeout import BodyReadTimeoutMiddleware
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
    """Add body-read deadline, admission control, API keys and CORS to ``app`` (see the module
    docstring for the order); returns the admission gate, whose in-flight count ``metrics``
    exports. Raises ``ApiKeyConfigError`` on an unusable key file."""
    gate = AdmissionGate(max_in_flight=settings.max_in_flight)
    metrics.in_flight.set_function(lambda: gate.in_flight)
    app.add_middleware(BodyReadTimeoutMiddleware, timeout_s=settings.body_read_timeout_s)
    app.add_middleware(AdmissionMiddleware, gate=gate, retry_after_s=settings.retry_after_s)
    keys = load_api_keys(
        keys_text=settings.api_keys.get_secret_value() if settings.api_keys else None,
        keys_file=settings.api_keys_file,
    )
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
        )
    return gate
