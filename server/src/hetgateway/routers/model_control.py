"""Loading and unloading models while serving (Triton's explicit model control), behind the
API key: both answer 403 unless API keys are configured, 401 without a matching key.

``POST /v1/models/{model}/load`` loads the model's newest files from Triton's repository (a
new version replaces the serving one once it is ready; broken files: 409 with Triton's reason,
and the previous version keeps serving); ``POST /v1/models/{model}/unload`` unloads it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from hetcontract import ModelSummary

from hetgateway.dependencies import DataPlaneDep
from hetgateway.routers.responses import error_responses

router = APIRouter(prefix="/v1/models", tags=["model control"])


@router.post(
    "/{model}/load", response_model=ModelSummary,
    responses=error_responses(401, 403, 404, 409, 503, 504),
)
async def load_model(model: str, plane: DataPlaneDep) -> ModelSummary:
    """Load the model's newest version from the repository, without downtime."""
    return await plane.load_model(model)


@router.post(
    "/{model}/unload", status_code=204, response_class=Response,
    responses=error_responses(401, 403, 409, 503, 504),
)
async def unload_model(model: str, plane: DataPlaneDep) -> Response:
    """Unload the model (requests in flight on it complete first)."""
    await plane.unload_model(model)
    return Response(status_code=204)
