"""Answers that exist only in the gateway (health); everything else is ``hetcontract``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    """``GET /healthz``: the process is alive."""

    model_config = ConfigDict(frozen=True)
    status: str = "ok"


class Readiness(BaseModel):
    """``GET /readyz`` when ready: Triton and every served model, by name."""

    model_config = ConfigDict(frozen=True)
    status: str = "ready"
    triton_ready: bool
    models: dict[str, bool]
    replicas_ready: int = Field(description="Triton replicas that answer ready")
    replicas: int = Field(description="Triton replicas the address names (resolved)")
