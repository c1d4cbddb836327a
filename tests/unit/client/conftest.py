"""Fixtures for the SDK's unit tests: a client of either kind over ``httpx.MockTransport``.

``run_client(handler, action, **client_kwargs)`` builds a ``Client`` or an ``AsyncClient``
(the fixture is parametrised over both, so every test using it checks sync/async parity),
whose transport answers with ``handler(request)``, and runs ``action(client)`` (awaiting it
for the async client). Sleeps between retries are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import hetclient
import httpx
import pytest
from hetcontract import (
    Confusable,
    ConfusedWith,
    LatentCorrelation,
    Prediction,
    PredictResponse,
    Result,
    ServedModel,
    Uncertainty,
)

BASE_URL = "http://gateway.test:8080"


class RecordingClient(hetclient.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sleeps: list[float] = []

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class RecordingAsyncClient(hetclient.AsyncClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sleeps: list[float] = []

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class Outcome(NamedTuple):
    result: Any
    sleeps: list[float]


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def run_client(client_kind: str) -> Callable[..., Outcome]:
    def run(handler: Handler, action: Callable[[Any], Any], **client_kwargs: Any) -> Outcome:
        transport = httpx.MockTransport(handler)
        if client_kind == "sync":
            with RecordingClient(BASE_URL, transport=transport, **client_kwargs) as client:
                return Outcome(action(client), client.sleeps)

        async def run_async() -> Outcome:
            async with RecordingAsyncClient(
                BASE_URL, transport=transport, **client_kwargs
            ) as client:
                result = action(client)
                if inspect.isawaitable(result):
                    result = await result
                return Outcome(result, client.sleeps)

        return asyncio.run(run_async())

    return run


@pytest.fixture
def make_answer() -> Callable[..., PredictResponse]:
    """``make_answer(num_results)``: a well-formed prediction answer."""
    return _make_answer


def _make_answer(num_results: int = 1, *, request_id: str = "rid-1") -> PredictResponse:
    """A well-formed prediction answer with ``num_results`` results."""
    result = Result(
        predictions=[
            Prediction(class_id=6, label="Shirt", probability=0.58),
            Prediction(class_id=0, label="T-shirt/top", probability=0.31),
        ],
        uncertainty=Uncertainty(
            predictive_entropy=0.93,
            normalized_entropy=0.40,
            expected_entropy=0.81,
            mutual_information=0.12,
            latent_correlation=LatentCorrelation(class_ids=[6, 0],
                                                 matrix=[[1.0, -0.62], [-0.62, 1.0]]),
            confusable=[
                Confusable(
                    class_id=6,
                    confused_with=[ConfusedWith(class_id=2, label="Pullover", share=0.71)],
                ),
                Confusable(
                    class_id=0,
                    confused_with=[ConfusedWith(class_id=6, label="Shirt", share=0.62)],
                ),
            ],
        ),
    )
    return PredictResponse(
        model=ServedModel(
            name="fashion_het", version="1", num_classes=10, mc_samples=1000, temperature=1.5
        ),
        results=[result] * num_results,
        request_id=request_id,
    )
