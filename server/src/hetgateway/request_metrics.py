"""Counting answers by route, model and status, and timing them by route (called once per
request by ``RequestContextMiddleware``, which already wraps every answer).

Labels never carry a caller's raw string, so odd URLs cannot blow up the label set:

- ``route`` is the matched route's template (``/v1/models/{model}/predict``), or
  ``"unmatched"``;
- ``model`` is the model a predict or model route names (its ``{model}`` path parameter, or the
  default model for ``/v1/predict``) when the gateway serves a model of that name, else
  ``"unknown"``; routes that name no model (health, metrics, the model list) get ``""``.

The served names and the default model are read from the app's ``ModelCatalog``
(``app.state.catalog``, set in the app's lifespan).
"""

from __future__ import annotations

from starlette.types import Scope

from hetgateway.metrics import GatewayMetrics

UNMATCHED_ROUTE = "unmatched"
UNKNOWN_MODEL = "unknown"
NO_MODEL = ""
MODEL_PATH_PARAMETER = "model"
DEFAULT_MODEL_ROUTES = frozenset({"/v1/predict"})


def model_label(scope: Scope, route: str) -> str:
    """The ``model`` label of a request, once routed (see the module docstring)."""
    named = scope.get("path_params", {}).get(MODEL_PATH_PARAMETER)
    if named is None and route not in DEFAULT_MODEL_ROUTES:
        return NO_MODEL
    app = scope.get("app")
    catalog = getattr(getattr(app, "state", None), "catalog", None)
    if catalog is None:
        return UNKNOWN_MODEL
    name = named if named is not None else catalog.default_name
    return name if name is not None and name in catalog.entries else UNKNOWN_MODEL


def record_request(
    metrics: GatewayMetrics, scope: Scope, *, route: str, status: int, seconds: float
) -> None:
    """Count one answered request (``requests``) and time it (``request_seconds``); ``route``
    is its template, or ``UNMATCHED_ROUTE``."""
    metrics.count_request(
        method=scope.get("method", ""),
        route=route,
        model=model_label(scope, route),
        status=status,
        seconds=seconds,
    )
