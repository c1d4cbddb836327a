"""A fake ``InferenceBackend`` for the gateway's unit tests: the whole request path (catalog,
data plane, coalescer, answer) without Triton.

``FakeBackend`` serves models described by model cards and computes every head output in
numpy, row by row, from a fixed linear model of the pixels: each image's outputs depend on
that image alone, whatever batch it travels in (as the exported graph's do). It records every
call (model and rows), can hold calls in flight until a test opens its gate, can fail calls,
and says how many replicas are up.

Fixtures: ``fake_backend`` -> ``FakeBackend`` serving ``fashion_het`` and ``fashion_det`` (the
shipped cards, K = 10, batch limit 8); ``fake_card`` -> the ``fashion_het`` card.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hetcontract import MODEL_CARD_FILENAME, MODEL_CARD_PARAMETER, ModelCard, OutputName
from hetgateway.backend import ModelConfigView, RepositoryEntry, VersionedOutputs
from hetgateway.errors import GatewayError, ModelNotReady

REPO_ROOT = Path(__file__).resolve().parents[3]
FAKE_MAX_BATCH_SIZE = 8
READY = "READY"


def shipped_card(name: str) -> ModelCard:
    """The model card of a shipped demo model."""
    return ModelCard.model_validate_json(
        (REPO_ROOT / "model_repo" / name / MODEL_CARD_FILENAME).read_text()
    )


@dataclass
class Call:
    """One call the fake received: the model, the rows, the request id."""

    model: str
    rows: int
    request_id: str


@dataclass
class FakeBackend:
    """See the module docstring. ``gate`` (when set to an unset event) holds every call until
    it is set; ``failures`` are raised by the next calls, one each (None: that call succeeds)."""

    cards: dict[str, ModelCard]
    max_batch_size: int = FAKE_MAX_BATCH_SIZE
    replicas: int = 1
    version: str = "1"
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    gate: asyncio.Event | None = None
    failures: list[GatewayError | None] = field(default_factory=list)
    closed: bool = False

    @property
    def replicas_up(self) -> int:
        return self.replicas

    async def infer(self, model: str, images: np.ndarray, *, output_names: Sequence[str],
                    request_id: str, timeout_s: float) -> VersionedOutputs:
        if model not in self.cards:
            raise ModelNotReady(f"model {model!r} is not ready in Triton")
        self.calls.append(Call(model, len(images), request_id))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await asyncio.wait_for(self.gate.wait(), timeout_s)
            else:
                await asyncio.sleep(0)
            failure = self.failures.pop(0) if self.failures else None
            if failure is not None:
                raise failure
            outputs = head_outputs(self.cards[model], images)
            return VersionedOutputs({name: outputs[name] for name in output_names},
                                    self.version)
        finally:
            self.in_flight -= 1

    async def replicas_ready(self) -> tuple[int, int]:
        return self.replicas, max(self.replicas, 1)

    async def model_ready(self, name: str) -> bool:
        return name in self.cards and self.replicas > 0

    async def repository_index(self) -> list[RepositoryEntry]:
        return [RepositoryEntry(name, self.version, READY) for name in sorted(self.cards)]

    async def model_config(self, name: str) -> ModelConfigView:
        return ModelConfigView(name, self.max_batch_size,
                               {MODEL_CARD_PARAMETER: self.cards[name].model_dump_json()},
                               outputs=frozenset(OutputName))

    async def load_model(self, name: str, *, timeout_s: float) -> None:
        return None

    async def unload_model(self, name: str, *, timeout_s: float) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def head_outputs(card: ModelCard, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every head output for ``images`` [B, C, H, W], each row computed on its own: p =
    softmax(W x / tau) with a fixed W; the HET-only outputs made up from p."""
    k, top, m = card.num_classes, card.top_k, card.num_confusable
    weights = _weights(k, int(np.prod(images.shape[1:])))
    rows = [_row(weights @ image.reshape(-1).astype(np.float64), card) for image in images]
    stacked = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    stacked[OutputName.TOPK_CORRELATION.value] = np.broadcast_to(
        np.eye(top, dtype=np.float32), (len(images), top, top)).copy()
    ids = stacked[OutputName.TOPK_IDS.value]
    stacked[OutputName.CONFUSABLE_IDS.value] = np.stack(
        [(ids + 1 + j) % k for j in range(m)], axis=-1).astype(np.int64)
    stacked[OutputName.CONFUSABLE_SHARE.value] = np.full((len(images), top, m), 1.0 / max(m, 1),
                                                         np.float32)
    return stacked


@functools.cache
def _weights(classes: int, features: int) -> np.ndarray:
    """The fake model's fixed weights, [classes, features]."""
    return np.random.default_rng(7).standard_normal((classes, features))


def _row(logits: np.ndarray, card: ModelCard) -> dict[str, np.ndarray]:
    scaled = logits / card.temperature
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[: card.top_k]
    entropy = float(-(p * np.log(np.maximum(p, 1e-30))).sum())
    expected = entropy * (0.9 if card.head != "det" else 1.0)
    return {
        OutputName.TOPK_IDS.value: order.astype(np.int64),
        OutputName.TOPK_PROBS.value: p[order].astype(np.float32),
        OutputName.PREDICTIVE_ENTROPY.value: np.float32(entropy),
        OutputName.EXPECTED_ENTROPY.value: np.float32(expected),
        OutputName.MUTUAL_INFORMATION.value: np.float32(entropy - expected),
        OutputName.PROBS.value: p.astype(np.float32),
    }


def image_rows(count: int, *, seed: int = 0, card: ModelCard | None = None) -> np.ndarray:
    """``count`` made-up preprocessed images, float32 [count, C, H, W] (the card's shape)."""
    shape = card.input.shape if card is not None else (1, 28, 28)
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


@pytest.fixture
def fake_card() -> ModelCard:
    return shipped_card("fashion_het")


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend({name: shipped_card(name) for name in ("fashion_het", "fashion_det")})




@pytest.fixture
def make_rows():
    """``make_rows(count, seed=0)``: made-up preprocessed images (see ``image_rows``)."""
    return image_rows


@pytest.fixture
def fake_app(fake_backend):
    """``fake_app(**settings)``: the gateway app (``create_app``) calling ``fake_backend``."""
    from hetgateway.app import create_app
    from hetgateway.settings import load_settings

    def build(**settings):
        return create_app(load_settings(**settings),
                          backend_factory=lambda _settings, _metrics: fake_backend)

    return build
