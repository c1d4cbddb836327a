"""Prometheus exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Response

from hetgateway.dependencies import MetricsDep
from hetgateway.metrics import EXPOSITION_CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(registry: MetricsDep) -> Response:
    """Counters and histograms in Prometheus' text format."""
    return Response(registry.exposition(), media_type=EXPOSITION_CONTENT_TYPE)
