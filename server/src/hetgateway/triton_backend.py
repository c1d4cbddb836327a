"""The one object that talks to Triton: ``tritonclient.grpc.aio`` clients, one per replica.

Binary tensors over gRPC, a client-side timeout on every call, and gRPC errors turned into the
gateway's domain errors (``BackendUnavailable``, ``BackendTimeout``, ``ModelNotReady`` ...).
The address is any gRPC target (``host:port``, ``ipv4:a:p,b:p``, ``dns:///name:port``, see
``triton_replicas``): calls go round-robin over the replicas that are up, and a call that fails
because its replica is gone (UNAVAILABLE, connection reset) is sent once more to another
replica; inference is idempotent, and the retry gets what is left of the call's timeout. Loading
and unloading a model (explicit model control) go to every replica up. Each channel reconnects
by itself; its reconnect backoff is capped so that a Triton that comes back is used again
within about a second.

Typical usage::

    backend = TritonBackend("ipv4:127.0.0.2:8001,127.0.0.3:8001", infer_timeout_s=10,
                            control_timeout_s=0.5)
    outputs = await backend.infer("fashion_het", batch, output_names=["topk_ids", ...])
    up, total = await backend.replicas_ready()
    await backend.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np
from hetcontract import INPUT_NAME
from tritonclient.grpc import service_pb2
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    InvalidInput,
    ModelLoadRefused,
    ModelNotReady,
)
from hetgateway.triton_replicas import (
    DEFAULT_REFRESH_INTERVAL_S,
    Replica,
    ReplicaPool,
    TargetError,
    parse_target,
)

MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
INITIAL_RECONNECT_BACKOFF_MS = 100
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 2_000

_STATUS_UNAVAILABLE = "StatusCode.UNAVAILABLE"
_STATUS_DEADLINE = "StatusCode.DEADLINE_EXCEEDED"
_STATUS_INVALID = "StatusCode.INVALID_ARGUMENT"
_STATUS_EXHAUSTED = "StatusCode.RESOURCE_EXHAUSTED"
_STATUS_CANCELLED = "StatusCode.CANCELLED"
_MODEL_MISSING_MARKS = ("unknown model", "not found", "not ready")
_FP32 = "FP32"
_InputTensor = service_pb2.ModelInferRequest.InferInputTensor
_RequestedOutput = service_pb2.ModelInferRequest.InferRequestedOutputTensor
_GONE_MARKS = ("connection reset", "socket closed", "connection refused", "failed to connect")
ATTEMPTS_PER_CALL = 2
"""A call is tried on at most this many replicas (the first, then one other)."""

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_GONE = "replica_gone"
ReplicaCallObserver = Callable[[str, str], None]
"""Told ``(replica address, outcome)`` after every inference attempt; outcome is
``OUTCOME_OK``, ``OUTCOME_ERROR`` (answered with an error) or ``OUTCOME_GONE`` (retried
elsewhere when another replica was left)."""

T = TypeVar("T")


@dataclass(frozen=True)
class RepositoryEntry:
    """One model in Triton's repository index."""

    name: str
    version: str
    state: str


@dataclass(frozen=True)
class VersionedOutputs:
    """An inference's outputs by name and the model version Triton computed them with."""

    outputs: dict[str, np.ndarray]
    version: str


@dataclass(frozen=True)
class ModelConfigView:
    """What the gateway reads from a model's Triton config."""

    name: str
    max_batch_size: int
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: frozenset[str] = frozenset()
    """The names of the model's outputs (an optional one such as ``latent_probs`` is asked
    for only where the model has it)."""


class TritonBackend:
    """Async gRPC access to Triton's replicas; every method fails with a ``GatewayError``."""

    def __init__(
        self,
        url: str,
        *,
        infer_timeout_s: float,
        control_timeout_s: float,
        max_reconnect_backoff_ms: int = 500,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        on_replica_call: ReplicaCallObserver | None = None,
    ) -> None:
        self.url = url
        self._infer_timeout_s = infer_timeout_s
        self._control_timeout_s = control_timeout_s
        self._on_replica_call = on_replica_call
        self._output_requests: dict[tuple[str, ...], list[_RequestedOutput]] = {}
        channel_args = _channel_args(max_reconnect_backoff_ms=max_reconnect_backoff_ms)
        try:
            target = parse_target(url)
        except TargetError as exc:
            raise ValueError(f"Triton address: {exc}") from exc
        self._pool: ReplicaPool[InferenceServerClient] = ReplicaPool(
            target,
            connect=lambda address: InferenceServerClient(address, channel_args=channel_args),
            probe=self._probe,
            disconnect=_close_client,
            refresh_interval_s=refresh_interval_s,
        )

    def _requested_outputs(self, names: tuple[str, ...]) -> list[_RequestedOutput]:
        """The output requests for ``names``, built once (they never change)."""
        if names not in self._output_requests:
            self._output_requests[names] = [_RequestedOutput(name=name) for name in names]
        return self._output_requests[names]

    async def close(self) -> None:
        """Stop watching the replicas and close every channel (the lifespan's shutdown)."""
        await self._pool.close()

    async def replicas_ready(self) -> tuple[int, int]:
        """Probe every replica now: (replicas ready, replicas known)."""
        await self._pool.start()
        return await self._pool.check(), len(self._pool.replicas)

    async def server_ready(self) -> bool:
        """Whether at least one replica answers and says it is ready."""
        up, _ = await self.replicas_ready()
        return up > 0

    async def model_ready(self, name: str) -> bool:
        """Whether the model is loaded and ready (on a replica that is up); False when no
        replica can be reached."""
        try:
            return bool(
                await self._call(
                    lambda client, timeout_s: client.is_model_ready(
                        name, client_timeout=timeout_s
                    ),
                    timeout_s=self._control_timeout_s,
                    model=name,
                )
            )
        except GatewayError:
            return False

    async def repository_index(self) -> list[RepositoryEntry]:
        """Every model Triton's repositories hold, loaded or not."""
        index = await self._call(
            lambda client, timeout_s: client.get_model_repository_index(
                as_json=True, client_timeout=timeout_s
            ),
            timeout_s=self._control_timeout_s,
            model=None,
        )
        return [
            RepositoryEntry(
                name=entry["name"],
                version=str(entry.get("version", "1")),
                state=str(entry.get("state", "")),
            )
            for entry in (index or {}).get("models", [])
        ]

    async def model_config(self, name: str) -> ModelConfigView:
        """The model's max batch size and string parameters (the model card among them)."""
        answer = await self._call(
            lambda client, timeout_s: client.get_model_config(
                name, as_json=True, client_timeout=timeout_s
            ),
            timeout_s=self._control_timeout_s,
            model=name,
        )
        config: dict[str, Any] = answer.get("config", {})
        parameters = {
            key: str(value.get("string_value", ""))
            for key, value in config.get("parameters", {}).items()
        }
        return ModelConfigView(
            name=name,
            max_batch_size=int(config.get("max_batch_size", 0)),
            parameters=parameters,
            outputs=frozenset(str(output.get("name", "")) for output in config.get("output", [])),
        )

    async def infer(
        self,
        model: str,
        images: np.ndarray,
        *,
        output_names: Sequence[str],
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        """Run ``images`` (float32 [B, C, H, W]) through the model; outputs by name."""
        answer = await self.infer_versioned(
            model, images, output_names=output_names, request_id=request_id
        )
        return answer.outputs

    async def infer_versioned(
        self,
        model: str,
        images: np.ndarray,
        *,
        output_names: Sequence[str],
        request_id: str = "",
    ) -> VersionedOutputs:
        """``infer``, with the version that answered (Triton's newest ready one: during a
        switch, the old one for requests already in flight).

        The ``ModelInferRequest`` is built here once, in one constructor call, and sent through
        the chosen replica's client stub (tritonclient's ``infer`` would wrap the tensor in
        ``InferInput``, copy it into the request field by field and wrap the answer in
        ``InferResult``: about 5 % of the gateway's CPU per batch-1 request when profiled);
        errors are mapped as tritonclient maps them, so a retry on another replica sees the
        same ``InferenceServerException``."""
        batch = np.ascontiguousarray(images, dtype=np.float32)
        request = service_pb2.ModelInferRequest(
            model_name=model,
            id=request_id,
            inputs=[_InputTensor(name=INPUT_NAME, datatype=_FP32, shape=batch.shape)],
            outputs=self._requested_outputs(tuple(output_names)),
            raw_input_contents=[batch.tobytes()],
        )
        response = await self._call(
            lambda client, timeout_s: _model_infer(client, request, timeout_s=timeout_s),
            timeout_s=self._infer_timeout_s,
            model=model,
            observe=self._on_replica_call,
        )
        return VersionedOutputs(
            _outputs_by_name(response, output_names, model=model), str(response.model_version)
        )

    async def load_model(self, name: str, *, timeout_s: float) -> None:
        """Ask every replica up (explicit model control) to load ``name`` again from its
        repository: a new version is loaded beside the serving one and replaces it once ready.
        ``ModelLoadRefused`` with Triton's reason when one cannot (the old one keeps serving)."""
        await self._on_every_replica(
            lambda client: client.load_model(name, client_timeout=timeout_s),
            name=name, action="load",
        )

    async def unload_model(self, name: str, *, timeout_s: float) -> None:
        """Ask every replica up to unload ``name`` (requests in flight on it complete first)."""
        await self._on_every_replica(
            lambda client: client.unload_model(name, client_timeout=timeout_s),
            name=name, action="unload",
        )

    async def _on_every_replica(
        self,
        call: Callable[[InferenceServerClient], Awaitable[Any]],
        *,
        name: str,
        action: str,
    ) -> None:
        """``call(client)`` on every replica up, at once: each replica holds its own loaded
        models. A replica found gone leaves the rotation (a Triton that starts again loads its
        repository's newest files); a refusal, or no replica reached, is the call's error."""
        await self._pool.start()
        replicas = [r for r in self._pool.replicas if r.up] or list(self._pool.replicas)
        if not replicas:
            raise BackendUnavailable(f"no Triton replica to call at {self.url!r}")
        outcomes = await asyncio.gather(
            *(call(replica.client) for replica in replicas), return_exceptions=True
        )
        failure: InferenceServerException | None = None
        answered = 0
        for replica, outcome in zip(replicas, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                answered += 1
                continue
            if not isinstance(outcome, InferenceServerException):
                raise outcome
            if not replica_gone(outcome):
                raise _control_error(outcome, name, action) from outcome
            self._pool.mark_down(replica)
            failure = outcome
        if failure is not None and not answered:
            raise _control_error(failure, name, action) from failure

    async def _call(
        self,
        call: Callable[[InferenceServerClient, float], Awaitable[T]],
        *,
        timeout_s: float,
        model: str | None,
        observe: ReplicaCallObserver | None = None,
    ) -> T:
        """``call(client, timeout_s)`` on the next replica up; once more on another replica
        if the first is gone, with what is left of ``timeout_s``."""
        await self._pool.start()
        deadline = time.monotonic() + timeout_s
        tried: list[str] = []
        failure: InferenceServerException | None = None
        for _ in range(ATTEMPTS_PER_CALL):
            replica = self._pool.pick(exclude=tried)
            remaining_s = deadline - time.monotonic() if tried else timeout_s
            if replica is None or remaining_s <= 0:
                break
            tried.append(replica.address)
            try:
                answer = await call(replica.client, remaining_s)
            except InferenceServerException as exc:
                if not replica_gone(exc):
                    _observe(observe, replica, OUTCOME_ERROR)
                    raise domain_error(exc, model=model) from exc
                _observe(observe, replica, OUTCOME_GONE)
                self._pool.mark_down(replica)
                failure = exc
                continue
            _observe(observe, replica, OUTCOME_OK)
            return answer
        if failure is None:
            raise BackendUnavailable(f"no Triton replica to call at {self.url!r}")
        raise domain_error(failure, model=model) from failure

    async def _probe(self, client: InferenceServerClient) -> bool:
        return bool(await client.is_server_ready(client_timeout=self._control_timeout_s))


async def _model_infer(
    client: InferenceServerClient, request: Any, *, timeout_s: float
) -> Any:
    """``ModelInfer`` through ``client``'s stub; a gRPC error as tritonclient raises it."""
    try:
        return await client._client_stub.ModelInfer(  # noqa: SLF001
            request=request, timeout=timeout_s
        )
    except grpc.RpcError as exc:
        raise _triton_exception(exc) from exc


def _triton_exception(exc: grpc.RpcError) -> InferenceServerException:
    """The ``InferenceServerException`` tritonclient raises for ``exc``."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    return InferenceServerException(
        msg=details() if callable(details) else str(exc),
        status=str(code()) if callable(code) else None,
    )


def _control_error(exc: InferenceServerException, name: str, action: str) -> GatewayError:
    """A refused load or unload; transport failures as for any call."""
    status = exc.status() or ""
    if status in (_STATUS_UNAVAILABLE, _STATUS_CANCELLED, _STATUS_DEADLINE):
        return domain_error(exc, model=None)
    first_line = (exc.message() or str(exc)).strip().splitlines()
    reason = first_line[0] if first_line else "no reason given"
    return ModelLoadRefused(f"Triton refused to {action} model {name!r}: {reason}")


def _outputs_by_name(
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


def replica_gone(exc: InferenceServerException) -> bool:
    """Whether a call failed because its replica cannot be reached (so another may answer):
    UNAVAILABLE (but not Triton's own UNAVAILABLE for an unknown or unready model), or a
    reset or closed connection whatever status gRPC gave it."""
    message = (exc.message() or str(exc)).lower()
    if any(mark in message for mark in _GONE_MARKS):
        return True
    missing_model = any(mark in message for mark in _MODEL_MISSING_MARKS)
    return (exc.status() or "") == _STATUS_UNAVAILABLE and not missing_model


def _observe(observe: ReplicaCallObserver | None, replica: Replica[Any], outcome: str) -> None:
    if observe is not None:
        observe(replica.address, outcome)


async def _close_client(client: InferenceServerClient) -> None:
    await client.close()


def domain_error(exc: InferenceServerException, *, model: str | None) -> GatewayError:
    """Translate a tritonclient error into the gateway's domain error."""
    status = exc.status() or ""
    message = exc.message() or str(exc)
    lowered = message.lower()
    about = f"model {model!r}" if model else "Triton"
    if status == _STATUS_DEADLINE:
        return BackendTimeout(f"Triton did not answer for {about} in time")
    if model and any(mark in lowered for mark in _MODEL_MISSING_MARKS):
        return ModelNotReady(f"{about} is not ready in Triton: {message}")
    if status in (_STATUS_UNAVAILABLE, _STATUS_CANCELLED):
        return BackendUnavailable(f"Triton is unreachable: {message}")
    if status == _STATUS_EXHAUSTED:
        return BackendUnavailable(f"Triton is overloaded: {message}")
    if status == _STATUS_INVALID:
        return InvalidInput(f"Triton refused the request for {about}: {message}")
    return BackendError(f"Triton failed on {about}: {message}")


def _channel_args(*, max_reconnect_backoff_ms: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
    ]
