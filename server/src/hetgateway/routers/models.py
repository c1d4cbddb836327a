"""The served models and their model cards."""

from __future__ import annotations

from fastapi import APIRouter
from hetcontract import ModelDetail, ModelList

from hetgateway.dependencies import DataPlaneDep
from hetgateway.routers.responses import error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, responses=error_responses(503))
async def list_models(plane: DataPlaneDep) -> ModelList:
    """Names, versions, readiness and labels of every served model."""
    return await plane.list_models()


@router.get("/{model}", response_model=ModelDetail, responses=error_responses(404, 503))
async def model_detail(model: str, plane: DataPlaneDep) -> ModelDetail:
    """One model's summary and its whole model card."""
    return await plane.model_detail(model)
