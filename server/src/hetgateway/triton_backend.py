"""The ``InferenceBackend`` that talks to Triton: KServe v2 over gRPC, one channel per replica.

Binary tensors over gRPC through the gateway's own stub (``hetgateway.triton_channel``), a
client-side timeout on every call, and failures mapped by gRPC status code into domain errors
(``hetgateway.triton_errors``). The address is any gRPC target (``host:port``,
``ipv4:a:p,b:p``, ``dns:///name:port``, see ``triton_replicas``): calls go round-robin over
the replicas that are up. Inference is idempotent, so a call whose replica is gone
(``UNAVAILABLE``, ``CANCELLED``) or does not serve the model (``NOT_FOUND``: a replica that is
shutting down unloads its models first) is sent once more to another replica with what is left
of its timeout; the first replica leaves the rotation. Loading and unloading a model go to
every replica up.

Typical usage::

    backend = TritonBackend("ipv4:127.0.0.2:8001,127.0.0.3:8001", control_timeout_s=0.5)
    answer = await backend.infer("fashion_het", batch, output_names=["topk_ids", ...],
                                 request_id="abc", timeout_s=10.0)
    up, total = await backend.replicas_ready()
    await backend.close()
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from hetcontract import INPUT_NAME
from tritonclient.grpc import service_pb2
from tritonclient.utils import triton_to_np_dtype

from hetgateway.backend import ModelConfigView, RepositoryEntry, VersionedOutputs
from hetgateway.errors import BackendError, BackendUnavailable, GatewayError, ModelLoadRefused
from hetgateway.triton_channel import TritonChannel
from hetgateway.triton_errors import (
    GONE_CODES,
    MAYBE_GONE_CODES,
    MODEL_MISSING_CODES,
    domain_error,
)
from hetgateway.triton_replicas import (
    DEFAULT_REFRESH_INTERVAL_S,
    DEFAULT_RELEASE_TIMEOUT_S,
    Replica,
    ReplicaPool,
    TargetError,
    parse_target,
)

ATTEMPTS_PER_CALL = 2
"""A call is tried on at most this many replicas (the first, then one other)."""
FP32 = "FP32"

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_GONE = "replica_gone"
ReplicaCallObserver = Callable[[str, str], None]
"""Told ``(replica address, outcome)`` after every inference attempt; outcome is
``OUTCOME_OK``, ``OUTCOME_ERROR`` (answered with an error) or ``OUTCOME_GONE`` (sent to
another replica when one was left)."""

T = TypeVar("T")
_InputTensor = service_pb2.ModelInferRequest.InferInputTensor
_RequestedOutput = service_pb2.ModelInferRequest.InferRequestedOutputTensor
_Stub = Any
"""``GRPCInferenceServiceStub`` (generated, untyped)."""


class TritonBackend:
    """Async gRPC access to Triton's replicas; every method fails with a ``GatewayError``."""

    def __init__(
        self,
        url: str,
        *,
        control_timeout_s: float,
        max_reconnect_backoff_ms: int = 500,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        release_timeout_s: float = DEFAULT_RELEASE_TIMEOUT_S,
        on_replica_call: ReplicaCallObserver | None = None,
    ) -> None:
        self.url = url
        self._control_timeout_s = control_timeout_s
        self._on_replica_call = on_replica_call
        self._output_requests: dict[tuple[str, ...], list[_RequestedOutput]] = {}
        try:
            target = parse_target(url)
        except TargetError as exc:
            raise ValueError(f"Triton address: {exc}") from exc
        self._pool: ReplicaPool[TritonChannel] = ReplicaPool(
            target,
            connect=lambda address: TritonChannel(
                address, max_reconnect_backoff_ms=max_reconnect_backoff_ms
            ),
            probe=self._probe,
            disconnect=_close_channel,
            refresh_interval_s=refresh_interval_s,
            release_timeout_s=release_timeout_s,
        )

    @property
    def replicas_up(self) -> int:
        """Replicas taken as up now."""
        return self._pool.up_count

    async def close(self) -> None:
        """Stop watching the replicas and close every channel (the lifespan's shutdown)."""
        await self._pool.close()

    async def replicas_ready(self) -> tuple[int, int]:
        """Probe every replica now: (replicas ready, replicas known)."""
        await self._pool.start()
        return await self._pool.check(), len(self._pool.replicas)

    async def model_ready(self, name: str) -> bool:
        """Whether the model is loaded and ready (on a replica that is up); False when no
        replica can be reached."""
        request = service_pb2.ModelReadyRequest(name=name)
        try:
            answer = await self._call(
                lambda stub, timeout_s: stub.ModelReady(request, timeout=timeout_s),
                timeout_s=self._control_timeout_s,
                model=name,
            )
        except GatewayError:
            return False
        return bool(answer.ready)

    async def repository_index(self) -> list[RepositoryEntry]:
        """Every model Triton's repositories hold, loaded or not."""
        request = service_pb2.RepositoryIndexRequest()
        answer = await self._call(
            lambda stub, timeout_s: stub.RepositoryIndex(request, timeout=timeout_s),
            timeout_s=self._control_timeout_s,
            model=None,
        )
        return [
            RepositoryEntry(name=entry.name, version=entry.version or "1", state=entry.state)
            for entry in answer.models
        ]

    async def model_config(self, name: str) -> ModelConfigView:
        """The model's batch limit, string parameters (the model card among them) and output
        names."""
        request = service_pb2.ModelConfigRequest(name=name)
        answer = await self._call(
            lambda stub, timeout_s: stub.ModelConfig(request, timeout=timeout_s),
            timeout_s=self._control_timeout_s,
            model=name,
        )
        config = answer.config
        return ModelConfigView(
            name=name,
            max_batch_size=int(config.max_batch_size),
            parameters={key: value.string_value for key, value in config.parameters.items()},
            outputs=frozenset(output.name for output in config.output),
        )

    async def infer(
        self,
        model: str,
        images: np.ndarray,
        *,
        output_names: Sequence[str],
        request_id: str,
        timeout_s: float,
    ) -> VersionedOutputs:
        """Run ``images`` (float32 [B, C, H, W]) through the model: its outputs by name (views
        on the answer's bytes, no copy) and the version that answered (Triton's newest ready
        one; during a switch, the old one for calls already in flight). The request is built
        once, in one constructor call, and sent as it is to whichever replica takes it."""
        batch = np.ascontiguousarray(images, dtype=np.float32)
        request = service_pb2.ModelInferRequest(
            model_name=model,
            id=request_id,
            inputs=[_InputTensor(name=INPUT_NAME, datatype=FP32, shape=batch.shape)],
            outputs=self._requested_outputs(tuple(output_names)),
            raw_input_contents=[batch.tobytes()],
        )
        response = await self._call(
            lambda stub, timeout_s: stub.ModelInfer(request, timeout=timeout_s),
            timeout_s=timeout_s,
            model=model,
            observe=self._on_replica_call,
        )
        return VersionedOutputs(
            outputs_by_name(response, output_names, model=model), str(response.model_version)
        )

    async def load_model(self, name: str, *, timeout_s: float) -> None:
        """Ask every replica up (explicit model control) to load ``name`` again from its
        repository: a new version is loaded beside the serving one and replaces it once ready.
        ``ModelLoadRefused`` with Triton's reason when one cannot (the old one keeps serving)."""
        request = service_pb2.RepositoryModelLoadRequest(model_name=name)
        await self._on_every_replica(
            lambda stub: stub.RepositoryModelLoad(request, timeout=timeout_s),
            name=name, action="load",
        )

    async def unload_model(self, name: str, *, timeout_s: float) -> None:
        """Ask every replica up to unload ``name`` (requests in flight on it complete first)."""
        request = service_pb2.RepositoryModelUnloadRequest(model_name=name)
        await self._on_every_replica(
            lambda stub: stub.RepositoryModelUnload(request, timeout=timeout_s),
            name=name, action="unload",
        )

    def _requested_outputs(self, names: tuple[str, ...]) -> list[_RequestedOutput]:
        """The output requests for ``names``, built once (they never change)."""
        if names not in self._output_requests:
            self._output_requests[names] = [_RequestedOutput(name=name) for name in names]
        return self._output_requests[names]

    async def _on_every_replica(
        self, call: Callable[[_Stub], Awaitable[Any]], *, name: str, action: str
    ) -> None:
        """``call(stub)`` on every replica up, at once: each replica holds its own loaded
        models. A replica that fails and no longer answers a liveness probe is gone: it leaves
        the rotation (a Triton that starts again loads its repository's newest files). A
        refusal by a live replica, or no replica reached, is the call's error."""
        await self._pool.start()
        replicas = [r for r in self._pool.replicas if r.up] or list(self._pool.replicas)
        if not replicas:
            raise BackendUnavailable(f"no Triton replica to call at {self.url!r}")
        outcomes = await asyncio.gather(
            *(self._leased(replica, call) for replica in replicas), return_exceptions=True
        )
        failures = [
            (replica, outcome)
            for replica, outcome in zip(replicas, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        ]
        gone: grpc.aio.AioRpcError | None = None
        for replica, failure in failures:
            if not isinstance(failure, grpc.aio.AioRpcError):
                raise failure
            if failure.code() in GONE_CODES and not await self._live(replica):
                self._pool.mark_down(replica)
                gone = failure
                continue
            if failure.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise domain_error(failure.code(), failure.details(), model=name) from failure
            raise _refusal(failure, name=name, action=action) from failure
        if gone is not None and len(failures) == len(replicas):
            raise domain_error(gone.code(), gone.details(), model=None) from gone

    async def _call(
        self,
        call: Callable[[_Stub, float], Awaitable[T]],
        *,
        timeout_s: float,
        model: str | None,
        observe: ReplicaCallObserver | None = None,
    ) -> T:
        """``call(stub, timeout_s)`` on the next replica up; once more on another replica if
        the first is gone or does not serve ``model`` (``NOT_FOUND``), with what is left of
        ``timeout_s``."""
        await self._pool.start()
        deadline = time.monotonic() + timeout_s
        tried: list[Replica[TritonChannel]] = []
        failure: grpc.aio.AioRpcError | None = None
        for _ in range(ATTEMPTS_PER_CALL):
            replica = self._pool.pick(exclude=[r.address for r in tried])
            remaining_s = deadline - time.monotonic() if tried else timeout_s
            if replica is None or remaining_s <= 0:
                break
            tried.append(replica)
            try:
                answer = await self._leased(replica, functools.partial(call, timeout_s=remaining_s))
            except grpc.aio.AioRpcError as exc:
                if await self._gone(replica, exc):
                    self._pool.mark_down(replica)
                elif exc.code() not in MODEL_MISSING_CODES or model is None:
                    _observe(observe, replica, OUTCOME_ERROR)
                    raise domain_error(exc.code(), exc.details(), model=model) from exc
                _observe(observe, replica, OUTCOME_GONE)
                failure = exc
                continue
            _observe(observe, replica, OUTCOME_OK)
            for refused in tried[:-1]:  # another replica serves the model: the first is leaving
                self._pool.mark_down(refused)
            return answer
        if failure is None:
            raise BackendUnavailable(f"no Triton replica to call at {self.url!r}")
        raise domain_error(failure.code(), failure.details(), model=model) from failure

    async def _leased(
        self, replica: Replica[TritonChannel], call: Callable[[_Stub], Awaitable[T]]
    ) -> T:
        """``call(stub)`` on ``replica``, holding its channel open while it runs. A call that
        its channel's closing cancelled (the replica left and outlasted the pool's release
        bound: gRPC cancels the call locally, which reaches here as ``CancelledError``) fails
        with ``CANCELLED`` like any call cut from its replica; a cancellation of the caller's
        own task goes on as it is."""
        with self._pool.lease(replica) as channel:
            try:
                return await call(channel.stub)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                raise _closed_under_call(replica.address) from None

    async def _probe(self, channel: TritonChannel) -> bool:
        answer = await channel.stub.ServerReady(
            service_pb2.ServerReadyRequest(), timeout=self._control_timeout_s
        )
        return bool(answer.ready)

    async def _gone(self, replica: Replica[TritonChannel], exc: grpc.aio.AioRpcError) -> bool:
        """Whether ``exc`` says the replica is gone: a gone code, or a code a reset connection
        may surface as, from a replica that then fails a liveness probe."""
        if exc.code() in GONE_CODES:
            return True
        return exc.code() in MAYBE_GONE_CODES and not await self._live(replica)

    async def _live(self, replica: Replica[TritonChannel]) -> bool:
        """Whether ``replica`` answers a liveness probe now (a Triton shutting down answers
        ``UNAVAILABLE`` "Server exiting": not live)."""
        with self._pool.lease(replica) as channel:
            try:
                await channel.stub.ServerLive(
                    service_pb2.ServerLiveRequest(), timeout=self._control_timeout_s
                )
            except grpc.aio.AioRpcError:
                return False
        return True


def outputs_by_name(
    response: Any, output_names: Sequence[str], *, model: str
) -> dict[str, np.ndarray]:
    """The binary outputs of a ``ModelInferResponse`` as arrays (views on the response's
    bytes, no copy), read in one pass; ``BackendError`` when one asked for is missing."""
    arrays = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        dtype = triton_to_np_dtype(output.datatype)
        if dtype is None or dtype is np.object_:
            continue  # BYTES outputs: the answer needs none
        arrays[output.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(output.shape))
    missing = [name for name in output_names if name not in arrays]
    if missing:
        raise BackendError(f"Triton's answer for model {model!r} lacks outputs {missing}")
    return {name: arrays[name] for name in output_names}


def _refusal(exc: grpc.aio.AioRpcError, *, name: str, action: str) -> ModelLoadRefused:
    """A live replica refused to load or unload ``name``: Triton's reason, first line."""
    lines = (exc.details() or "").strip().splitlines()
    reason = lines[0] if lines else exc.code().name
    return ModelLoadRefused(f"Triton refused to {action} model {name!r}: {reason}")


def _closed_under_call(address: str) -> grpc.aio.AioRpcError:
    """The error of a call whose channel to ``address`` was closed while it ran."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
        details=f"the channel to {address} closed under the call",
    )


def _observe(observe: ReplicaCallObserver | None, replica: Replica[Any], outcome: str) -> None:
    if observe is not None:
        observe(replica.address, outcome)


async def _close_channel(channel: TritonChannel) -> None:
    await channel.close()
