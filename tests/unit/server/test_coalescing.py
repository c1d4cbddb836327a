"""Coalescing: requests for one model that arrive while its calls are in flight go out as one
call when a slot frees; each gets exactly its own rows back, as if sent alone; deadlines and
cancellation stay per request; a lone request never waits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hetgateway.answer import ANSWER_OUTPUTS
from hetgateway.coalescing import REQUEST_IDS_SEPARATOR, Coalescer
from hetgateway.errors import BackendTimeout, BackendUnavailable

MODEL = "fashion_het"
LIMIT = 8
TIMEOUT_S = 5.0


def coalescer(backend, *, calls_per_replica: int = 1, enabled: bool = True, observed=None):
    return Coalescer(backend, calls_per_replica=calls_per_replica, enabled=enabled,
                     on_call=None if observed is None else (lambda *call: observed.append(call)))


async def infer(merger: Coalescer, rows: np.ndarray, request_id: str = "r", *,
                model: str = MODEL, timeout_s: float = TIMEOUT_S,
                output_names: tuple[str, ...] = ANSWER_OUTPUTS):
    return await merger.infer(model, rows, output_names=output_names, max_batch_size=LIMIT,
                              request_id=request_id, timeout_s=timeout_s)


async def alone(backend, rows: np.ndarray, model: str = MODEL,
                output_names: tuple[str, ...] = ANSWER_OUTPUTS):
    return await backend.infer(model, rows, output_names=output_names, request_id="alone",
                               timeout_s=TIMEOUT_S)


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


def assert_same_bits(answer, reference) -> None:
    assert answer.outputs.keys() == reference.outputs.keys()
    for name in answer.outputs:
        got, want = answer.outputs[name], reference.outputs[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name


def test_a_lone_request_goes_out_at_once_as_its_own_call(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        rows = make_rows(3)
        answer = await infer(merger, rows, "only")
        assert [(c.rows, c.request_id) for c in fake_backend.calls] == [(3, "only")]
        assert_same_bits(answer, await alone(fake_backend, rows))

    asyncio.run(scenario())


def test_requests_arriving_while_a_call_is_in_flight_go_out_together_with_their_own_rows(
    fake_backend, make_rows
):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1, seed=0), "a"))
        await settle()
        sizes = [2, 1, 3]
        batches = [make_rows(n, seed=10 + i) for i, n in enumerate(sizes)]
        later = [asyncio.create_task(infer(merger, rows, f"b{i}"))
                 for i, rows in enumerate(batches)]
        await settle()
        assert len(fake_backend.calls) == 1  # the others wait for the slot
        fake_backend.gate.set()
        answers = await asyncio.gather(first, *later)
        assert [c.rows for c in fake_backend.calls] == [1, sum(sizes)]
        assert fake_backend.calls[1].request_id == REQUEST_IDS_SEPARATOR.join(["b0", "b1", "b2"])
        fake_backend.gate = None
        for rows, answer in zip(batches, answers[1:], strict=True):
            assert_same_bits(answer, await alone(fake_backend, rows))

    asyncio.run(scenario())


def test_a_call_carries_at_most_the_models_batch_limit_oldest_first(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        tasks = [asyncio.create_task(infer(merger, make_rows(1), "first"))]
        await settle()
        sizes = [5, 3, 4, 8, 1]
        tasks += [asyncio.create_task(infer(merger, make_rows(n, seed=n), f"r{i}"))
                  for i, n in enumerate(sizes)]
        await settle()
        fake_backend.gate.set()
        await asyncio.gather(*tasks)
        assert [c.rows for c in fake_backend.calls] == [1, 5 + 3, 4, 8, 1]
        assert all(c.rows <= LIMIT for c in fake_backend.calls)

    asyncio.run(scenario())


def test_calls_in_flight_are_bounded_per_replica_up(fake_backend, make_rows):
    async def scenario(replicas: int) -> int:
        fake_backend.replicas = replicas
        fake_backend.most_in_flight = 0
        fake_backend.gate = asyncio.Event()
        merger = coalescer(fake_backend, calls_per_replica=2)
        tasks = [asyncio.create_task(infer(merger, make_rows(1, seed=i))) for i in range(20)]
        await settle()
        in_flight = fake_backend.in_flight
        fake_backend.gate.set()
        await asyncio.gather(*tasks)
        assert fake_backend.most_in_flight == in_flight
        return in_flight

    assert asyncio.run(scenario(1)) == 2
    assert asyncio.run(scenario(3)) == 6


def test_models_queue_apart(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        tasks = [asyncio.create_task(infer(merger, make_rows(1, seed=i), model=model))
                 for i, model in enumerate(["fashion_het", "fashion_det"] * 3)]
        await settle()
        assert sorted(c.model for c in fake_backend.calls) == ["fashion_det", "fashion_het"]
        fake_backend.gate.set()
        answers = await asyncio.gather(*tasks)
        assert sorted((c.model, c.rows) for c in fake_backend.calls) == [
            ("fashion_det", 1), ("fashion_det", 2), ("fashion_het", 1), ("fashion_het", 2)]
        fake_backend.gate = None
        for i, (model, answer) in enumerate(
                zip(["fashion_het", "fashion_det"] * 3, answers, strict=True)):
            assert_same_bits(answer, await alone(fake_backend, make_rows(1, seed=i), model))

    asyncio.run(scenario())


def test_a_request_timing_out_in_the_queue_leaves_it_and_its_batch_mates_are_answered(
    fake_backend, make_rows
):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1)))
        await settle()
        hasty = asyncio.create_task(infer(merger, make_rows(2, seed=1), "hasty", timeout_s=0.05))
        patient = asyncio.create_task(infer(merger, make_rows(1, seed=2), "patient"))
        with pytest.raises(BackendTimeout):
            await hasty
        fake_backend.gate.set()
        answer = await patient
        await first
        assert [(c.rows, c.request_id) for c in fake_backend.calls][1:] == [(1, "patient")]
        fake_backend.gate = None
        assert_same_bits(answer, await alone(fake_backend, make_rows(1, seed=2)))

    asyncio.run(scenario())


def test_a_request_cancelled_in_flight_loses_only_its_own_rows(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1)))
        await settle()
        leaving = asyncio.create_task(infer(merger, make_rows(1, seed=1), "leaving"))
        staying = asyncio.create_task(infer(merger, make_rows(2, seed=2), "staying"))
        await settle()
        fake_backend.gate.set()
        fake_backend.gate = asyncio.Event()  # holds the merged call, once it goes out
        await first
        await settle()
        assert fake_backend.in_flight == 1
        leaving.cancel()  # its call (with "staying") is in flight now
        await settle()
        fake_backend.gate.set()
        answer = await staying
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert [c.rows for c in fake_backend.calls] == [1, 3]
        fake_backend.gate = None
        assert_same_bits(answer, await alone(fake_backend, make_rows(2, seed=2)))

    asyncio.run(scenario())


def test_a_request_cancelled_while_waiting_is_never_sent(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1)))
        await settle()
        gone = asyncio.create_task(infer(merger, make_rows(4, seed=1), "gone"))
        await settle()
        gone.cancel()
        kept = asyncio.create_task(infer(merger, make_rows(1, seed=2), "kept"))
        await settle()
        fake_backend.gate.set()
        await asyncio.gather(first, kept)
        assert [(c.rows, c.request_id) for c in fake_backend.calls][1:] == [(1, "kept")]

    asyncio.run(scenario())


def test_a_failed_call_fails_each_of_its_requests_with_its_own_error(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1)))
        await settle()
        merged = [asyncio.create_task(infer(merger, make_rows(1, seed=i))) for i in range(3)]
        await settle()
        fake_backend.failures = [None, BackendUnavailable("Triton is unreachable")]
        fake_backend.gate.set()
        await first
        return await asyncio.gather(*merged, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert [type(o) for o in outcomes] == [BackendUnavailable] * 3
    assert len({id(o) for o in outcomes}) == 3
    assert [c.rows for c in fake_backend.calls] == [1, 3]


def test_with_coalescing_off_every_request_is_its_own_call(fake_backend, make_rows):
    async def scenario():
        merger = coalescer(fake_backend, enabled=False)
        fake_backend.gate = asyncio.Event()
        tasks = [asyncio.create_task(infer(merger, make_rows(1, seed=i))) for i in range(5)]
        await settle()
        assert fake_backend.in_flight == 5
        fake_backend.gate.set()
        await asyncio.gather(*tasks)
        assert [c.rows for c in fake_backend.calls] == [1] * 5

    asyncio.run(scenario())


def test_every_call_is_observed_with_its_rows_and_requests(fake_backend, make_rows):
    observed: list[tuple] = []

    async def scenario():
        merger = coalescer(fake_backend, observed=observed)
        fake_backend.gate = asyncio.Event()
        tasks = [asyncio.create_task(infer(merger, make_rows(2, seed=i))) for i in range(4)]
        await settle()
        fake_backend.gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert [(model, rows, requests) for model, rows, requests, _ in observed] == [
        (MODEL, 2, 1), (MODEL, 6, 3)]
    assert all(seconds >= 0 for *_, seconds in observed)


def test_requests_asking_for_different_outputs_merge_and_each_gets_only_its_own(
    fake_backend, make_rows
):
    with_probs = (*ANSWER_OUTPUTS, "probs")

    async def scenario():
        merger = coalescer(fake_backend)
        fake_backend.gate = asyncio.Event()
        first = asyncio.create_task(infer(merger, make_rows(1)))
        await settle()
        plain = asyncio.create_task(infer(merger, make_rows(2, seed=1)))
        extra = asyncio.create_task(infer(merger, make_rows(1, seed=2), output_names=with_probs))
        await settle()
        fake_backend.gate.set()
        await first
        answers = await asyncio.gather(plain, extra)
        assert [c.rows for c in fake_backend.calls] == [1, 3]
        fake_backend.gate = None
        assert_same_bits(answers[0], await alone(fake_backend, make_rows(2, seed=1)))
        assert_same_bits(answers[1], await alone(fake_backend, make_rows(1, seed=2),
                                                 output_names=with_probs))

    asyncio.run(scenario())
