"""Predictions: JSON (base64 images or tensors) or multipart ``images`` files.

The answer is serialised once, straight from the ``PredictResponse`` the data plane built
(``model_dump_json``), rather than through FastAPI's response-model path, which would validate
and encode the same model again; ``response_model`` still documents it in OpenAPI. The only
dependency is the data plane (it owns the batch limit); the request id comes from the request
context, so FastAPI resolves one dependency per request instead of three.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from hetcontract import PredictResponse

from hetgateway.data_plane import DataPlane
from hetgateway.dependencies import DataPlaneDep
from hetgateway.request_context import current_request_id
from hetgateway.request_parsing import (
    IMAGES_FIELD,
    JSON_MEDIA_TYPE,
    MULTIPART_MEDIA_TYPE,
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
    """Top-k classes, entropies and class correlations from the named model."""
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
        parsed.inputs, model=model, top_k=parsed.top_k, request_id=current_request_id() or ""
    )
    return _json(answer)


def _json(answer: PredictResponse) -> Response:
    """The answer as JSON bytes, serialised once."""
    return Response(content=answer.model_dump_json(), media_type=JSON_MEDIA_TYPE)
