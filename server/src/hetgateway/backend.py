"""What the gateway needs from the serving side: the ``InferenceBackend`` protocol and the
values it answers with.

The data plane, the model catalog and the coalescer depend on this protocol, never on a
concrete backend: ``TritonBackend`` (gRPC to Triton's replicas) implements it in production,
and tests drive the whole request path with a fake that computes its outputs in numpy.

Every method fails with a ``hetgateway.errors.GatewayError`` (``BackendUnavailable``,
``BackendTimeout``, ``ModelNotReady``, ...), never with a transport's own exception.

Typical usage::

    async def answer(backend: InferenceBackend, batch: np.ndarray) -> VersionedOutputs:
        return await backend.infer("fashion_het", batch, output_names=("topk_ids",),
                                   request_id="abc", timeout_s=10.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RepositoryEntry:
    """One model in Triton's repository index."""

    name: str
    version: str
    state: str


@dataclass(frozen=True)
class VersionedOutputs:
    """An inference's outputs by name (batch first) and the model version that computed them."""

    outputs: dict[str, np.ndarray]
    version: str


@dataclass(frozen=True)
class ModelConfigView:
    """The parts of a model's Triton config the gateway reads: Triton's batch limit (the most
    rows one call may carry; 0: the model takes no batch dimension), the string parameters
    (the model card among them) and the output names."""

    name: str
    max_batch_size: int
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: frozenset[str] = frozenset()
    """The names of the model's outputs (an optional one such as ``latent_probs`` is asked
    for only where the model has it)."""


class InferenceBackend(Protocol):
    """The serving side of the gateway (see the module docstring)."""

    @property
    def replicas_up(self) -> int:
        """Replicas taken as up now (no I/O; at least 0)."""
        ...

    async def infer(
        self,
        model: str,
        images: np.ndarray,
        *,
        output_names: Sequence[str],
        request_id: str,
        timeout_s: float,
    ) -> VersionedOutputs:
        """Run ``images`` (float32 [B, C, H, W]) through ``model``; its outputs by name and
        the version that answered. ``timeout_s`` bounds the whole call, retries included."""
        ...

    async def replicas_ready(self) -> tuple[int, int]:
        """Probe every replica now: (replicas ready, replicas known)."""
        ...

    async def model_ready(self, name: str) -> bool:
        """Whether ``name`` is loaded and ready; False when no replica can be reached."""
        ...

    async def repository_index(self) -> list[RepositoryEntry]:
        """Every model the serving side's repositories hold, loaded or not."""
        ...

    async def model_config(self, name: str) -> ModelConfigView:
        """``name``'s batch limit and string parameters."""
        ...

    async def load_model(self, name: str, *, timeout_s: float) -> None:
        """Load ``name`` (again) everywhere it is served."""
        ...

    async def unload_model(self, name: str, *, timeout_s: float) -> None:
        """Unload ``name`` everywhere it is served."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...
