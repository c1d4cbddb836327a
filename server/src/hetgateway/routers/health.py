"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from hetgateway.dependencies import DataPlaneDep, DrainDep
from hetgateway.errors import BackendUnavailable, ModelNotReady, ShuttingDown
from hetgateway.routers.responses import error_responses
from hetgateway.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The gateway process is alive (says nothing about Triton)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses=error_responses(503))
async def readyz(plane: DataPlaneDep, drain: DrainDep) -> Readiness:
    """A Triton replica is ready and so is every served model; else 503 naming what is not.
    The answer says how many of Triton's replicas are ready. From SIGTERM on: 503
    ``shutting_down`` (the gateway drains: it still answers requests, see
    ``hetgateway.shutdown_drain``)."""
    if drain.draining:
        raise ShuttingDown("the gateway is shutting down; it answers what it is sent meanwhile")
    state = await plane.readiness()
    if not state.triton_ready:
        raise BackendUnavailable(
            f"Triton is not reachable or not ready (0 of {state.replicas} replicas ready)"
        )
    if not state.ready:
        waiting = [name for name, ready in state.models.items() if not ready]
        raise ModelNotReady(
            f"models not ready: {', '.join(waiting)}" if waiting else "no model is served yet"
        )
    return Readiness(
        triton_ready=True,
        models=state.models,
        replicas_ready=state.replicas_ready,
        replicas=state.replicas,
    )
