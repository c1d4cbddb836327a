"""The synchronous client: ``BaseClient`` plus sending with httpx and sleeping with time.

Typical usage::

    import hetclient

    with hetclient.Client("http://127.0.0.1:8080") as client:
        answer = client.predict(["shirt.png", "boot.png"], model="fashion_het", top_k=3)
        for result in answer.results:
            best = result.predictions[0]
            print(best.label, best.probability, result.uncertainty.predictive_entropy)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from types import TracebackType

import httpx
from hetcontract import ModelDetail, ModelList, PredictResponse

from hetclient.base_client import DEFAULT_TIMEOUT_S, BaseClient
from hetclient.inputs import ImageLike
from hetclient.retries import DEFAULT_MAX_RETRIES


class Client(BaseClient):
    """Talks to a hetserve gateway; thread-safe, reuses connections. Close it (or use ``with``).

    ``transport`` is passed to ``httpx.Client`` (tests give an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str | httpx.URL,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout_s=timeout_s, max_retries=max_retries, api_key=api_key)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        *,
        model: str | None = None,
        top_k: int | None = None,
        include: Sequence[str] = (),
        coverage: float | None = None,
        risk: float | None = None,
    ) -> PredictResponse:
        """Top-k classes and uncertainty for one input or a list of them (see
        ``hetclient.inputs`` for what each input type is sent as); ``model=None`` asks the
        gateway's default model; ``top_k=None`` sends none and gets the gateway's default,
        ``min(DEFAULT_TOP_K, the model's k_max)``; ``include`` asks for per-class vectors
        beyond the default answer (``"probs"``, ``"latent_probs"``: each result's ``.probs``,
        ``.latent_probs``). A calibrated model's results carry a ``prediction_set`` and a
        ``decision``, at its default coverage and risk unless ``coverage`` / ``risk`` name
        others from its table (``model(name).decisions``)."""
        request = self._build_predict_request(images, model=model, top_k=top_k, include=include,
                                              coverage=coverage, risk=risk)
        return self._parse_predict(self._send(request))

    def models(self) -> ModelList:
        """The served models and the default one."""
        return self._parse_models(self._send(self._build_models_request()))

    def model(self, name: str) -> ModelDetail:
        """One model's summary, the decisions it supports (``decisions``: its calibration, or
        why it has none) and its model card."""
        return self._parse_model(self._send(self._build_model_request(name)))

    def health(self) -> bool:
        """True when the gateway process answers ``/healthz``."""
        return self._parse_health(self._send(self._build_health_request()))

    def ready(self) -> bool:
        """True when Triton and every model are ready, False while they are not (503)."""
        response = self._send(self._build_ready_request(), retry_on_status=False)
        return self._parse_ready(response)

    def _send(self, request: httpx.Request, *, retry_on_status: bool = True) -> httpx.Response:
        for retries_done in itertools.count():
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                delay_s = self._retry_delay_after_error(retries_done)
                if delay_s is None:
                    raise self._connection_error(exc, request) from exc
            else:
                delay_s = self._retry_delay_after_response(
                    response, retries_done, retry_on_status=retry_on_status
                )
                if delay_s is None:
                    return response
            self._sleep(delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)
