"""Answers that exist only in the gateway (health); everything else is ``hetcontract``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
