"""Request coalescing: concurrent requests for one model go to Triton as one batched call.

Each model has a bounded number of call slots (``calls_per_replica`` for every replica up).
A request that finds a free slot and nobody waiting goes out at once, alone: there is no
timer, so a lone request at low load waits for nothing. A request that finds every slot busy
waits in the model's queue; when a call ends, its slot takes everything waiting (up to the
model's batch limit, oldest first) as one call, rows concatenated in arrival order. Each
request then gets exactly its own rows of every output back (views on the call's answer).
The served graph is batch-invariant (an image gets the same bits in any batch), so a
coalesced answer is bit-identical to the answer the request would get alone.

Each request keeps its own deadline (its time in the queue counts) and its own cancellation:
a request that times out or whose client goes away leaves the queue, or, once its call is in
flight, just does not wait for it; the call goes on for its batch-mates. A call that fails
fails each of its requests with the same domain error (the backend has already tried another
replica). Coalescing off (``enabled=False``): every request is its own call.

Typical usage::

    coalescer = Coalescer(backend, calls_per_replica=2)
    answer = await coalescer.infer("fashion_het", rows, output_names=ANSWER_OUTPUTS,
                                   max_batch_size=64, request_id="abc", timeout_s=10.0)
    await coalescer.close()
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hetgateway.backend import InferenceBackend, VersionedOutputs
from hetgateway.errors import BackendTimeout, GatewayError

CallObserver = Callable[[str, int, int, float], None]
"""Told ``(model, rows, requests, seconds)`` after every call to the backend."""
REQUEST_IDS_SEPARATOR = ","
"""A coalesced call's request id is its requests' ids joined by this (Triton's logs)."""


@dataclass(eq=False)
class _Waiting:
    """A request waiting for a call slot: its rows, its id and deadline, and the future its
    handler awaits."""

    rows: np.ndarray
    output_names: tuple[str, ...]
    request_id: str
    deadline: float
    answer: asyncio.Future[VersionedOutputs]


@dataclass(eq=False)
class _ModelLine:
    """One model's queue and the number of its calls in flight."""

    waiting: deque[_Waiting] = field(default_factory=deque)
    in_flight: int = 0


class Coalescer:
    """Merges concurrent requests per model into batched backend calls (module docstring)."""

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        calls_per_replica: int,
        enabled: bool = True,
        on_call: CallObserver | None = None,
    ) -> None:
        if calls_per_replica < 1:
            raise ValueError("calls_per_replica must be at least 1")
        self._backend = backend
        self._calls_per_replica = calls_per_replica
        self._enabled = enabled
        self._on_call = on_call
        self._lines: dict[str, _ModelLine] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def infer(
        self,
        model: str,
        rows: np.ndarray,
        *,
        output_names: Sequence[str],
        max_batch_size: int,
        request_id: str,
        timeout_s: float,
    ) -> VersionedOutputs:
        """``rows`` (float32 [n, C, H, W], n <= ``max_batch_size``) through ``model``: this
        request's ``output_names`` and the version that computed them. ``max_batch_size`` is
        Triton's batch limit for the model (0: it takes no batch, so nothing is merged). A
        merged call asks for every output any of its requests wants; each gets its own."""
        output_names = tuple(output_names)
        line = self._lines.get(model)
        if line is None:
            line = self._lines[model] = _ModelLine()
        if not self._enabled or max_batch_size <= 0 or (
            not line.waiting and line.in_flight < self._slots()
        ):
            return await self._alone(model, line, rows, output_names=output_names,
                                     request_id=request_id, timeout_s=timeout_s,
                                     max_batch_size=max_batch_size)
        waiting = _Waiting(rows, output_names, request_id, time.monotonic() + timeout_s,
                           asyncio.get_running_loop().create_future())
        line.waiting.append(waiting)
        try:
            return await asyncio.wait_for(waiting.answer, timeout_s)
        except TimeoutError:
            raise BackendTimeout(f"Triton did not answer for model {model!r} in time") from None
        finally:
            if not waiting.answer.done():  # timed out or cancelled while still queued
                waiting.answer.cancel()

    async def close(self) -> None:
        """Wait for the calls in flight (the lifespan's shutdown, after the server drained)."""
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    def _slots(self) -> int:
        """Calls one model may have in flight: ``calls_per_replica`` per replica up (as many
        as for one replica when none is up, so that errors still come from Triton)."""
        return self._calls_per_replica * max(1, self._backend.replicas_up)

    async def _alone(self, model: str, line: _ModelLine, rows: np.ndarray, *,
                     output_names: tuple[str, ...], request_id: str, timeout_s: float,
                     max_batch_size: int) -> VersionedOutputs:
        """One request, one call, awaited in the request's own task (no future, no task)."""
        line.in_flight += 1
        started = time.perf_counter()
        try:
            return await self._backend.infer(model, rows, output_names=output_names,
                                             request_id=request_id, timeout_s=timeout_s)
        finally:
            line.in_flight -= 1
            self._observe(model, len(rows), 1, started)
            self._dispatch(model, line, max_batch_size)

    def _dispatch(self, model: str, line: _ModelLine, max_batch_size: int) -> None:
        """While a slot is free and requests wait, send the waiting ones as calls of at most
        ``max_batch_size`` rows each, oldest first."""
        while line.waiting and line.in_flight < self._slots():
            batch = _take(line.waiting, max_batch_size)
            if not batch:
                return
            line.in_flight += 1
            task = asyncio.get_running_loop().create_task(
                self._call(model, line, batch, max_batch_size)
            )
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, model: str, line: _ModelLine, batch: list[_Waiting],
                    max_batch_size: int) -> None:
        """One backend call for ``batch``; each request's future gets its rows or the error."""
        started = time.perf_counter()
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([w.rows for w in batch])
        try:
            answer = await self._backend.infer(
                model,
                rows,
                output_names=tuple(dict.fromkeys(n for w in batch for n in w.output_names)),
                request_id=REQUEST_IDS_SEPARATOR.join(w.request_id for w in batch),
                timeout_s=max(w.deadline for w in batch) - time.monotonic(),
            )
        except GatewayError as exc:
            for waiting in batch:
                _settle(waiting, error=type(exc)(str(exc)))
        except asyncio.CancelledError:  # the loop is closing: nobody waits forever
            for waiting in batch:
                waiting.answer.cancel()
            raise
        except Exception as exc:  # a bug: each request answers 500 instead of hanging
            for waiting in batch:
                _settle(waiting, error=exc)
            raise
        else:
            start = 0
            for waiting in batch:
                stop = start + len(waiting.rows)
                _settle(waiting, answer=VersionedOutputs(
                    {name: answer.outputs[name][start:stop] for name in waiting.output_names},
                    answer.version,
                ))
                start = stop
        finally:
            line.in_flight -= 1
            self._observe(model, len(rows), len(batch), started)
            self._dispatch(model, line, max_batch_size)

    def _observe(self, model: str, rows: int, requests: int, started: float) -> None:
        if self._on_call is not None:
            self._on_call(model, rows, requests, time.perf_counter() - started)


def _take(waiting: deque[_Waiting], max_rows: int) -> list[_Waiting]:
    """The oldest waiting requests that are still waited for, as many as fit ``max_rows``
    (the first always fits: the data plane never queues more rows than the limit)."""
    batch: list[_Waiting] = []
    rows = 0
    while waiting:
        head = waiting[0]
        if head.answer.done():  # its handler gave up (timeout, cancellation)
            waiting.popleft()
            continue
        if batch and rows + len(head.rows) > max_rows:
            break
        batch.append(waiting.popleft())
        rows += len(head.rows)
    return batch


def _settle(waiting: _Waiting, *, answer: VersionedOutputs | None = None,
            error: BaseException | None = None) -> None:
    """Hand a request its answer or error, unless its handler stopped waiting."""
    if waiting.answer.done():
        return
    if error is not None:
        waiting.answer.set_exception(error)
    else:
        waiting.answer.set_result(answer)
