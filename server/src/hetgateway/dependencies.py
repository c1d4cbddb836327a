"""FastAPI dependencies as typed aliases: routes declare what they need, tests override them.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread,
a hop per dependency per request.

Typical usage::

    @router.get("/v1/models")
    async def list_models(plane: DataPlaneDep) -> ModelList: ...

    app.dependency_overrides[get_data_plane] = lambda: DataPlane(backend, catalog, ...)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hetgateway.data_plane import DataPlane
from hetgateway.metrics import GatewayMetrics
from hetgateway.shutdown_drain import ShutdownDrain


async def get_data_plane(request: Request) -> DataPlane:
    """The app's data plane (built in the lifespan)."""
    return request.app.state.data_plane


async def get_metrics(request: Request) -> GatewayMetrics:
    """The app's metrics."""
    return request.app.state.metrics


async def get_drain(request: Request) -> ShutdownDrain:
    """The app's shutdown drain (whether SIGTERM arrived)."""
    return request.app.state.drain


DataPlaneDep = Annotated[DataPlane, Depends(get_data_plane)]
DrainDep = Annotated[ShutdownDrain, Depends(get_drain)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
