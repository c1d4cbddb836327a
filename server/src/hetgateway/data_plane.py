"""The gateway's data plane: predictions, model metadata and readiness, with no HTTP in it.

Routers hand it plain inputs (``EncodedImage`` / ``RawTensor``); it validates them against
the model card and the limits, preprocesses them (in a worker thread: Pillow and numpy are
CPU-bound), sends the batch to Triton in chunks of the model's ``max_batch_size``, and shapes
the answer in the layout of the ``hetcontract`` models (the predict answer as JSON bytes,
serialised once, see ``hetgateway.answer``). Failures are domain errors (``hetgateway.errors``).

Typical usage::

    plane = DataPlane(backend, catalog, settings=settings, metrics=metrics)
    answer_json = await plane.predict([EncodedImage(png, "inputs[0]")], model=None, top_k=3,
                                      request_id="abc")   # PredictResponse as JSON bytes
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
from anyio import to_thread
from hetcontract import ExtraOutput, ModelDetail, ModelList, ModelSummary
from hetcontract.api import MAX_TOP_K_DEFAULT as DEFAULT_TOP_K

from hetgateway.accuracy_monitor import AccuracyMonitor
from hetgateway.answer import ANSWER_OUTPUTS, answer_json, answer_outputs, result_layouts
from hetgateway.backend import InferenceBackend, VersionedOutputs
from hetgateway.coalescing import Coalescer
from hetgateway.decisions import decision_support, resolve_levels
from hetgateway.errors import (
    BackendError,
    Forbidden,
    GatewayError,
    InvalidInput,
    PayloadTooLarge,
)
from hetgateway.inputs import EncodedImage, PredictInput
from hetgateway.metrics import GatewayMetrics
from hetgateway.model_catalog import CatalogEntry, ModelCatalog
from hetgateway.preprocessing import image_tensor, tensor_from_nested
from hetgateway.settings import GatewaySettings

__all__ = ["DataPlane", "Readiness"]

EXTRA_OUTPUTS: tuple[str, ...] = get_args(ExtraOutput)
"""The per-class vectors a request may include, where the model outputs them."""

INLINE_PREPROCESS_BYTES = 64 * 1024
"""Requests of images totalling at most this many encoded bytes are preprocessed on the event
loop (a 28x28 PNG decodes in about 0.1 ms, less than a worker-thread hop); others, and raw
tensors, in a worker thread so that the loop is never held long."""


@dataclass(frozen=True)
class Readiness:
    """Whether Triton and every served model are ready, which are not, and how many of
    Triton's replicas are up."""

    ready: bool
    triton_ready: bool
    models: dict[str, bool]
    replicas_ready: int = 0
    replicas: int = 0


class DataPlane:
    """Predict, describe models, report readiness."""

    def __init__(
        self,
        backend: InferenceBackend,
        catalog: ModelCatalog,
        *,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
    ) -> None:
        self._backend = backend
        self._catalog = catalog
        self._settings = settings
        self._metrics = metrics
        self._accuracy = AccuracyMonitor(metrics, window_images=settings.accuracy_window_images)
        self._coalescer = Coalescer(
            backend,
            calls_per_replica=settings.triton_calls_per_replica,
            enabled=settings.coalesce,
            on_call=metrics.observe_triton_call,
        )

    async def close(self) -> None:
        """Let the calls in flight end (the lifespan's shutdown)."""
        await self._coalescer.close()

    @property
    def max_inputs(self) -> int:
        """Most inputs one predict request may carry (``max_inputs_per_request`` setting)."""
        return self._settings.max_inputs_per_request

    async def readiness(self) -> Readiness:
        """At least one Triton replica ready and every served model ready (no model known
        counts as not ready)."""
        up, total = await self._backend.replicas_ready()
        replicas = {"replicas_ready": up, "replicas": total}
        if not up:
            return Readiness(ready=False, triton_ready=False, models={}, **replicas)
        try:
            await self._catalog.ensure_discovered()
        except GatewayError:
            return Readiness(ready=False, triton_ready=True, models={}, **replicas)
        names = sorted(self._catalog.entries)
        states = await asyncio.gather(*(self._backend.model_ready(name) for name in names))
        models = dict(zip(names, states, strict=True))
        return Readiness(
            ready=bool(models) and all(states), triton_ready=True, models=models, **replicas
        )

    async def list_models(self) -> ModelList:
        """Every served model with its readiness; the default model's name."""
        await self._catalog.refresh_if_stale()
        entries = self._catalog.entries
        states = await asyncio.gather(*(self._backend.model_ready(n) for n in entries))
        return ModelList(
            default_model=self._catalog.default_name,
            models=[
                _summary(entry, ready=ready)
                for entry, ready in sorted(zip(entries.values(), states, strict=True), key=_by_name)
            ],
        )

    async def model_detail(self, name: str) -> ModelDetail:
        """One model's summary, the decisions its answers carry (or why none) and its whole
        model card."""
        await self._catalog.refresh_if_stale()
        entry = await self._catalog.get(name)
        ready = await self._backend.model_ready(entry.name)
        summary = _summary(entry, ready=ready)
        return ModelDetail(**summary.model_dump(), model_card=entry.card.model_dump(mode="json"),
                           decisions=decision_support(entry.card))

    async def predict(
        self,
        inputs: Sequence[PredictInput],
        *,
        model: str | None,
        top_k: int | None,
        request_id: str,
        include: Sequence[str] = (),
        coverage: float | None = None,
        risk: float | None = None,
    ) -> bytes:
        """Classify every input with ``model`` (None: the default model); ``top_k`` None means
        ``min(DEFAULT_TOP_K, k_max)``; ``include`` names per-class vectors to add to every
        result (``hetcontract.ExtraOutput``; Triton is asked for them only then); ``coverage``
        and ``risk`` None mean the card's default levels of a calibrated model's decisions
        (``hetgateway.decisions``). Returns the ``PredictResponse`` as JSON."""
        if not inputs:
            raise InvalidInput("no inputs: send at least one image or tensor")
        if len(inputs) > self.max_inputs:
            raise PayloadTooLarge(
                f"{len(inputs)} inputs in one request; the limit is {self.max_inputs}"
            )
        entry = await self._catalog.get(model)
        if top_k is None:
            top_k = min(DEFAULT_TOP_K, entry.card.top_k)
        if not 1 <= top_k <= entry.card.top_k:
            raise InvalidInput(
                f"top_k must be between 1 and {entry.card.top_k} for model {entry.name!r}; "
                f"got {top_k}"
            )
        missing = [name for name in include if name not in entry.outputs]
        if missing:
            raise InvalidInput(
                f"model {entry.name!r} does not output {', '.join(missing)} (exported before "
                "it existed: export it again to serve it)"
            )
        resolve_levels(entry.name, entry.decisions, coverage=coverage, risk=risk)
        output_names = tuple(dict.fromkeys((*answer_outputs(entry.decisions), *include)))
        if _cheap_to_preprocess(inputs):
            batch = self._preprocess(inputs, entry)
        else:
            batch = await to_thread.run_sync(self._preprocess, inputs, entry)
        self._metrics.for_model(entry.name).batch_size.observe(len(inputs))
        outputs, version = await self._infer(
            entry, batch, request_id=request_id, output_names=output_names
        )
        entry = await self._catalog.for_version(entry, version)
        self._metrics.observe_uncertainty(entry.name, outputs)
        levels = resolve_levels(entry.name, entry.decisions, coverage=coverage, risk=risk)
        decided = None
        if levels is not None and entry.decisions is not None and all(
            name in outputs for name in entry.decisions.output_names()  # not across a switch
        ):
            decided = entry.decisions.decide(outputs, levels)
            self._accuracy.observe(entry.name, decided.confident,
                                   calibrated_accuracy=entry.decisions.calibrated_accuracy)
        card = entry.card
        served = {  # ServedModel's layout
            "name": entry.name,
            "version": entry.version,
            "num_classes": card.num_classes,
            "mc_samples": card.mc_samples,
            "temperature": card.temperature,
        }
        return answer_json(
            served,
            result_layouts(outputs, card, top_k=top_k, include=include, decided=decided),
            request_id=request_id,
        )

    def _preprocess(self, inputs: Sequence[PredictInput], entry: CatalogEntry) -> np.ndarray:
        """The inputs as one float32 [B, C, H, W] batch; errors name the failing input."""
        tensors = []
        for item in inputs:
            try:
                tensors.append(self._tensor(item, entry))
            except GatewayError as exc:
                raise type(exc)(f"{item.origin}: {exc}") from exc
        return np.stack(tensors)

    def _tensor(self, item: PredictInput, entry: CatalogEntry) -> np.ndarray:
        spec = entry.card.input
        if isinstance(item, EncodedImage):
            if len(item.data) > self._settings.max_image_bytes:
                raise PayloadTooLarge(
                    f"image of {len(item.data)} bytes exceeds the limit of "
                    f"{self._settings.max_image_bytes} bytes"
                )
            return image_tensor(item.data, spec, max_pixels=self._settings.max_image_pixels)
        return tensor_from_nested(item.values, spec)

    async def _infer(
        self,
        entry: CatalogEntry,
        batch: np.ndarray,
        *,
        request_id: str,
        output_names: tuple[str, ...] = ANSWER_OUTPUTS,
    ) -> tuple[dict[str, np.ndarray], str]:
        """Send ``batch`` through the coalescer in chunks of the model's max batch size;
        outputs concatenated, and the model version that computed them (chunks split across
        a version switch are sent again, once, so that one answer comes from one version)."""
        limit = entry.max_batch_size if entry.max_batch_size > 0 else len(batch)
        if len(batch) <= limit:  # the common case: one chunk, awaited without a task
            answer = await self._send(entry, batch, request_id=request_id,
                                      output_names=output_names)
            return answer.outputs, answer.version
        for _ in range(2):
            parts = await asyncio.gather(*(
                self._send(entry, batch[start : start + limit], request_id=request_id,
                           output_names=output_names)
                for start in range(0, len(batch), limit)
            ))
            versions = {part.version for part in parts}
            if len(versions) == 1:
                break
        else:
            raise BackendError(
                f"model {entry.name!r} answered from versions {sorted(versions)} while "
                "switching versions; send the request again"
            )
        outputs = {
            name: np.concatenate([part.outputs[name] for part in parts]) for name in output_names
        }
        return outputs, parts[0].version

    def _send(self, entry: CatalogEntry, rows: np.ndarray, *, request_id: str,
              output_names: tuple[str, ...]) -> Awaitable[VersionedOutputs]:
        return self._coalescer.infer(
            entry.name,
            rows,
            output_names=output_names,
            max_batch_size=entry.max_batch_size,
            request_id=request_id,
            timeout_s=self._settings.infer_timeout_s,
        )

    def _check_model_control(self) -> None:
        """Loading and unloading change what everyone is served: allowed only when API keys
        are configured (the auth middleware has then checked the caller's key)."""
        if self._settings.api_keys is None and self._settings.api_keys_file is None:
            raise Forbidden(
                "model control needs API keys: set HETSERVE_API_KEYS or HETSERVE_API_KEYS_FILE"
            )

    async def load_model(self, name: str) -> ModelSummary:
        """Load ``name`` (again) from Triton's repository: a new version replaces the serving
        one once ready; ``ModelLoadRefused`` when Triton will not (what served still does)."""
        self._check_model_control()
        await self._backend.load_model(name, timeout_s=self._settings.model_load_timeout_s)
        await self._catalog.refresh()
        entry = await self._catalog.get(name)
        return _summary(entry, ready=await self._backend.model_ready(name))

    async def unload_model(self, name: str) -> None:
        """Unload ``name`` in Triton (requests in flight on it complete first)."""
        self._check_model_control()
        await self._backend.unload_model(name, timeout_s=self._settings.model_load_timeout_s)
        await self._catalog.refresh()


def _cheap_to_preprocess(inputs: Sequence[PredictInput]) -> bool:
    """Only encoded images, at most ``INLINE_PREPROCESS_BYTES`` of them together."""
    total = 0
    for item in inputs:
        if not isinstance(item, EncodedImage):
            return False
        total += len(item.data)
    return total <= INLINE_PREPROCESS_BYTES


def _summary(entry: CatalogEntry, *, ready: bool) -> ModelSummary:
    return ModelSummary(
        name=entry.name,
        version=entry.version,
        ready=ready,
        head=entry.card.head,
        num_classes=entry.card.num_classes,
        labels=list(entry.card.labels),
        extra_outputs=[name for name in EXTRA_OUTPUTS if name in entry.outputs],
    )


def _by_name(pair: tuple[CatalogEntry, bool]) -> str:
    return pair[0].name


