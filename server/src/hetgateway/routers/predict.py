"""Predictions: JSON (base64 images or tensors) or multipart ``images`` files.

The answer is the JSON the data plane serialised once (``hetgateway.answer``), sent as it is
rather than through FastAPI's response-model path, which would validate and encode it again;
``response_model`` still documents it in OpenAPI.

The routes are plain FastAPI routes, solved by FastAPI on every request like any other: a
dependency declared on a route, on this router, where the router is included or on the app
runs for predictions too (``tests/unit/server/test_predict_dependencies.py``). They declare
none themselves: the data plane is the app's (``app.state.data_plane``, built in the
lifespan; tests build the app with a fake backend), read by ``data_plane_of``, because a
declared dependency costs FastAPI's dependency solving more on this route, where every
request goes, than the rest of the routing together (callgrind, in-process: +0.22 M
instructions per request, against +0.16 M for FastAPI's handler with no dependency at all).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from hetcontract import PredictResponse

from hetgateway.data_plane import DataPlane
from hetgateway.request_context import current_request_id
from hetgateway.request_parsing import (
    COVERAGE_FIELD,
    IMAGES_FIELD,
    INCLUDE_FIELD,
    JSON_MEDIA_TYPE,
    MULTIPART_MEDIA_TYPE,
    RISK_FIELD,
    TOP_K_FIELD,
    read_predict_request,
)
from hetgateway.routers.responses import error_responses

router = APIRouter(tags=["predict"])

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
                        INCLUDE_FIELD: {
                            "type": "string",
                            "description": "comma-separated: probs, latent_probs",
                        },
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
async def predict_with_model(model: str, request: Request) -> Response:
    """Top-k classes, entropies, where each class's probability moves and, for a calibrated
    model, the prediction set and the accept-or-review decision (at the model's default
    coverage and risk, or at ``coverage`` / ``risk`` from its calibration table)."""
    return await _predict(request, model=model)


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=PREDICT_REQUEST_BODY,
)
async def predict_with_default_model(request: Request) -> Response:
    """Like ``/v1/models/{model}/predict`` with the default model."""
    return await _predict(request, model=None)


def data_plane_of(request: Request) -> DataPlane:
    """The data plane of the app serving ``request``."""
    return request.app.state.data_plane


async def _predict(request: Request, *, model: str | None) -> Response:
    """Parse the body, ask ``model`` (None: the default model) and answer with JSON."""
    plane = data_plane_of(request)
    parsed = await read_predict_request(request, max_inputs=plane.max_inputs)
    answer = await plane.predict(
        parsed.inputs,
        model=model,
        top_k=parsed.top_k,
        request_id=current_request_id() or "",
        include=parsed.include,
        coverage=parsed.coverage,
        risk=parsed.risk,
    )
    return Response(content=answer, media_type=JSON_MEDIA_TYPE)
