"""Predictions: JSON (base64 images or tensors) or multipart ``images`` files.

The answer is the JSON the data plane serialised once (``hetgateway.answer``), sent as it is
rather than through FastAPI's response-model path, which would validate and encode it again;
``response_model`` still documents it in OpenAPI. The only
dependency is the data plane (it owns the batch limit); the request id comes from the request
context.

Both routes are ``PredictRoute``s (FastAPI's documented custom ``APIRoute`` hook): OpenAPI,
routing, error handling and the route template seen by logs and metrics are FastAPI's, but a
request skips FastAPI's per-request dependency solving (about 7 % of the gateway's CPU per
batch-1 request when profiled) and goes straight to ``_predict`` with the app's data plane.
When the app has dependency overrides (tests), the request takes FastAPI's own path, so an
override of ``get_data_plane`` applies as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from hetcontract import PredictResponse

from hetgateway.data_plane import DataPlane
from hetgateway.dependencies import DataPlaneDep, get_data_plane
from hetgateway.request_context import current_request_id
from hetgateway.request_parsing import (
    COVERAGE_FIELD,
    IMAGES_FIELD,
    JSON_MEDIA_TYPE,
    MULTIPART_MEDIA_TYPE,
    RISK_FIELD,
    TOP_K_FIELD,
    read_predict_request,
)
from hetgateway.routers.responses import error_responses

MODEL_PATH_PARAMETER = "model"


class PredictRoute(APIRoute):
    """A predict route whose requests skip FastAPI's dependency solving (see the module
    docstring); everything else is ``APIRoute``'s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if request.app.dependency_overrides:
                return await standard(request)
            return await _predict(
                request,
                await get_data_plane(request),
                model=request.path_params.get(MODEL_PATH_PARAMETER),
            )

        return handle


router = APIRouter(tags=["predict"], route_class=PredictRoute)

PREDICT_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            MULTIPART_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": [IMAGES_FIELD],
                    "properties": {
                        IMAGES_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        TOP_K_FIELD: {"type": "integer", "minimum": 1},
                        COVERAGE_FIELD: {"type": "number", "exclusiveMinimum": 0,
                                         "exclusiveMaximum": 1},
                        RISK_FIELD: {"type": "number", "exclusiveMinimum": 0,
                                     "exclusiveMaximum": 1},
                    },
                }
            },
        },
    }
}
PREDICT_ERRORS = error_responses(400, 404, 413, 415, 422, 503, 504)


@router.post(
    "/v1/models/{model}/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=PREDICT_REQUEST_BODY,
)
async def predict_with_model(
    model: str,
    request: Request,
    plane: DataPlaneDep,
) -> Response:
    """Top-k classes, entropies, where each class's probability moves and, for a calibrated
    model, the prediction set and the accept-or-review decision (at the model's default
    coverage and risk, or at ``coverage`` / ``risk`` from its calibration table)."""
    return await _predict(request, plane, model=model)


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=PREDICT_REQUEST_BODY,
)
async def predict_with_default_model(
    request: Request,
    plane: DataPlaneDep,
) -> Response:
    """Like ``/v1/models/{model}/predict`` with the default model."""
    return await _predict(request, plane, model=None)


async def _predict(request: Request, plane: DataPlane, *, model: str | None) -> Response:
    """Parse the body, ask ``model`` (None: the default model) and answer with JSON."""
    parsed = await read_predict_request(request, max_inputs=plane.max_inputs)
    answer = await plane.predict(
        parsed.inputs, model=model, top_k=parsed.top_k, request_id=current_request_id() or "",
        coverage=parsed.coverage, risk=parsed.risk,
    )
    return Response(content=answer, media_type=JSON_MEDIA_TYPE)
