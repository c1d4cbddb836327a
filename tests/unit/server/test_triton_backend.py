"""The Triton backend over real gRPC: KServe v2 servers on loopback (scripted stand-ins for
Triton replicas, speaking the same generated service) show which failures send a call to
another replica, which replica then leaves the rotation, and what each failure becomes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelLoadRefused,
    ModelNotReady,
)
from hetgateway.triton_backend import OUTCOME_GONE, OUTCOME_OK, TritonBackend
from tritonclient.grpc import service_pb2, service_pb2_grpc

MODEL = "m"
OUTPUT = "topk_probs"
PROBE_EVERY_S = 60.0
"""No probe brings a replica back while a scenario runs (the stand-ins always say ready)."""


@dataclass
class Script:
    """How one stand-in replica answers: ``infer`` None answers (each row's sum), else that
    status; ``load`` likewise for model control."""

    infer: grpc.StatusCode | None = None
    load: grpc.StatusCode | None = None
    delay_s: float = 0.0
    calls: int = 0
    ids: list[str] = field(default_factory=list)


class Replica(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def ServerLive(self, request, context):  # noqa: N802 (generated names)
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request, context):  # noqa: N802
        self.script.calls += 1
        self.script.ids.append(request.id)
        await asyncio.sleep(self.script.delay_s)
        if self.script.infer is not None:
            await context.abort(self.script.infer, f"scripted {self.script.infer.name}")
        rows = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(
            tuple(request.inputs[0].shape))
        sums = rows.reshape(len(rows), -1).sum(axis=1, keepdims=True).astype(np.float32)
        return service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="3",
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(
                name=OUTPUT, datatype="FP32", shape=sums.shape)],
            raw_output_contents=[sums.tobytes()])

    async def RepositoryModelLoad(self, request, context):  # noqa: N802
        if self.script.load is not None:
            await context.abort(self.script.load, "explicit model load / unload is not allowed")
        return service_pb2.RepositoryModelLoadResponse()


async def serve(scripts: list[Script]) -> tuple[list[grpc.aio.Server], str]:
    """One stand-in per script on loopback, the i-th on 127.0.0.(2 + i) (so that the pool's
    round-robin, which goes by address, starts with the first); the ``ipv4:`` target."""
    servers, addresses = [], []
    for i, script in enumerate(scripts):
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Replica(script), server)
        host = f"127.0.0.{2 + i}"
        port = server.add_insecure_port(f"{host}:0")
        await server.start()
        servers.append(server)
        addresses.append(f"{host}:{port}")
    return servers, "ipv4:" + ",".join(addresses)


def run(scripts: list[Script], scenario) -> list[tuple[str, str]]:
    """Run ``scenario(backend)`` against stand-ins; the replica calls the backend observed."""
    observed: list[tuple[str, str]] = []

    async def main():
        servers, target = await serve(scripts)
        backend = TritonBackend(target, control_timeout_s=2, refresh_interval_s=PROBE_EVERY_S,
                                on_replica_call=lambda *call: observed.append(call))
        try:
            await backend.replicas_ready()
            await asyncio.sleep(0.2)  # the background loop's first probe, done before calls
            await scenario(backend)
        finally:
            await backend.close()
            for server in servers:
                await server.stop(None)

    asyncio.run(main())
    return observed


async def infer(backend: TritonBackend, rows: int = 2, timeout_s: float = 5.0):
    images = np.arange(rows * 4, dtype=np.float32).reshape(rows, 1, 2, 2)
    return await backend.infer(MODEL, images, output_names=[OUTPUT], request_id="rid",
                               timeout_s=timeout_s)


def test_an_answer_is_read_from_the_binary_outputs_with_its_version():
    scripts = [Script()]

    async def scenario(backend):
        answer = await infer(backend)
        assert answer.version == "3"
        np.testing.assert_array_equal(answer.outputs[OUTPUT], [[6.0], [22.0]])

    observed = run(scripts, scenario)
    assert [outcome for _, outcome in observed] == [OUTCOME_OK]
    assert scripts[0].ids == ["rid"]


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE])
def test_a_replica_that_lacks_the_model_or_cannot_serve_sends_the_call_to_another_and_leaves(
    code: grpc.StatusCode,
):
    """A shutting-down Triton unloads its models first (NOT_FOUND) or refuses (UNAVAILABLE):
    the other replica answers, and the first takes no further calls until a probe."""
    leaving, staying = Script(infer=code), Script()

    async def scenario(backend):
        for _ in range(6):
            answer = await infer(backend)
            np.testing.assert_array_equal(answer.outputs[OUTPUT], [[6.0], [22.0]])
        assert backend.replicas_up == 1

    observed = run([leaving, staying], scenario)
    assert leaving.calls == 1 and staying.calls == 6
    assert [outcome for _, outcome in observed].count(OUTCOME_GONE) == 1


def test_a_model_missing_everywhere_is_not_ready():
    async def scenario(backend):
        with pytest.raises(ModelNotReady):
            await infer(backend)

    scripts = [Script(infer=grpc.StatusCode.NOT_FOUND), Script(infer=grpc.StatusCode.NOT_FOUND)]
    run(scripts, scenario)
    assert [s.calls for s in scripts] == [1, 1]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
        (grpc.StatusCode.INTERNAL, BackendError),  # a live replica's own failure
        (grpc.StatusCode.RESOURCE_EXHAUSTED, BackendUnavailable),
    ],
)
def test_the_callers_or_the_models_failure_is_answered_at_once_without_a_retry(code, error):
    scripts = [Script(infer=code), Script(infer=code)]

    async def scenario(backend):
        with pytest.raises(error):
            await infer(backend)

    run(scripts, scenario)
    assert sum(s.calls for s in scripts) == 1


def test_a_call_past_its_timeout_is_a_backend_timeout():
    async def scenario(backend):
        with pytest.raises(BackendTimeout):
            await infer(backend, timeout_s=0.05)

    run([Script(delay_s=1.0)], scenario)


def test_a_live_replica_refusing_a_load_is_the_answer():
    async def scenario(backend):
        with pytest.raises(ModelLoadRefused, match="not allowed"):
            await backend.load_model(MODEL, timeout_s=5)
        assert backend.replicas_up == 1

    run([Script(load=grpc.StatusCode.UNAVAILABLE)], scenario)


def test_a_call_whose_replicas_are_all_gone_tries_two_and_answers_unavailable(unused_port):
    """Real gRPC channels to two loopback ports nobody listens on."""
    first, second = f"127.0.0.1:{unused_port()}", f"127.0.0.1:{unused_port()}"
    attempts: list[tuple[str, str]] = []

    async def scenario() -> tuple[int, int]:
        backend = TritonBackend(f"ipv4:{first},{second}", control_timeout_s=1,
                                on_replica_call=lambda *a: attempts.append(a))
        try:
            with pytest.raises(BackendUnavailable):
                await infer(backend)
            return await backend.replicas_ready()
        finally:
            await backend.close()

    assert asyncio.run(scenario()) == (0, 2)
    assert sorted(attempts) == sorted([(first, OUTCOME_GONE), (second, OUTCOME_GONE)])


def test_a_coalesced_batch_whose_replica_goes_away_is_answered_whole_by_another():
    """Requests merged into one call: the first replica refuses it (a Triton shutting down);
    the whole batch goes to the other, and each request still gets its own rows."""
    from hetgateway.coalescing import Coalescer

    leaving, staying = Script(infer=grpc.StatusCode.NOT_FOUND, delay_s=0.05), Script()

    async def scenario(backend):
        merger = Coalescer(backend, calls_per_replica=1)
        sizes = [1, 2, 3, 1]
        starts = np.cumsum([0, *sizes])[:-1]
        batches = [np.full((n, 1, 2, 2), float(start), np.float32)
                   for n, start in zip(sizes, starts, strict=True)]
        answers = await asyncio.gather(*(
            merger.infer(MODEL, rows, output_names=[OUTPUT], max_batch_size=8,
                         request_id=f"r{i}", timeout_s=5)
            for i, rows in enumerate(batches)))
        for rows, answer in zip(batches, answers, strict=True):
            np.testing.assert_array_equal(answer.outputs[OUTPUT][:, 0],
                                          rows.reshape(len(rows), -1).sum(axis=1))

    run([leaving, staying], scenario)
    # two slots (one per replica): r0 to the leaving replica, r1 to the other; r2 and r3 wait,
    # go out together when r1 is answered, to the leaving replica (its turn), and are refused
    assert leaving.ids == ["r0", "r2,r3"]
    assert sorted(staying.ids) == ["r0", "r1", "r2,r3"]


def test_a_call_in_flight_on_a_replica_that_leaves_dns_is_answered_not_cancelled(
    loopback_dns, unused_port
):
    """A DNS target: the replica answering slowly leaves the name's records while a call runs
    on it; the call's answer still arrives from it, and its channel closes afterwards."""
    slow, other = Script(delay_s=0.6), Script()
    name = "replicas.hetserve.test"
    observed: list[tuple[str, str]] = []

    async def main() -> None:
        port = unused_port()
        servers = []
        for i, script in enumerate((slow, other)):
            server = grpc.aio.server()
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Replica(script), server)
            assert server.add_insecure_port(f"127.0.27.{1 + i}:{port}") == port
            await server.start()
            servers.append(server)
        loopback_dns.set(name, ["127.0.27.1", "127.0.27.2"])
        backend = TritonBackend(f"dns://{loopback_dns.address}/{name}:{port}",
                                control_timeout_s=2, refresh_interval_s=PROBE_EVERY_S,
                                on_replica_call=lambda *call: observed.append(call))
        try:
            assert await backend.replicas_ready() == (2, 2)
            call = asyncio.create_task(infer(backend))  # round-robin: to 127.0.27.1 first
            await asyncio.sleep(0.2)
            loopback_dns.set(name, ["127.0.27.2"])
            assert await backend.replicas_ready() == (1, 1)
            answer = await call
            np.testing.assert_array_equal(answer.outputs[OUTPUT], [[6.0], [22.0]])
            await asyncio.sleep(0.05)
            assert backend._pool.leaving == ()  # closed once its call ended
            for _ in range(3):
                await infer(backend)
        finally:
            await backend.close()
            for server in servers:
                await server.stop(None)

    asyncio.run(main())
    assert [(address.split(":")[0], outcome) for address, outcome in observed] == [
        ("127.0.27.1", OUTCOME_OK)] + [("127.0.27.2", OUTCOME_OK)] * 3
    assert slow.calls == 1 and other.calls == 3


def test_a_call_outlasting_the_release_bound_of_a_leaving_replica_goes_to_another(
    loopback_dns, unused_port
):
    """Past ``release_timeout_s`` the leaving replica's channel closes under the call
    (``CANCELLED``): the call is sent to the replica that stays, within its timeout."""
    stuck, other = Script(delay_s=3.0), Script()
    name = "replicas.hetserve.test"

    async def main() -> None:
        port = unused_port()
        servers = []
        for i, script in enumerate((stuck, other)):
            server = grpc.aio.server()
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Replica(script), server)
            assert server.add_insecure_port(f"127.0.27.{1 + i}:{port}") == port
            await server.start()
            servers.append(server)
        loopback_dns.set(name, ["127.0.27.1", "127.0.27.2"])
        backend = TritonBackend(f"dns://{loopback_dns.address}/{name}:{port}",
                                control_timeout_s=2, refresh_interval_s=PROBE_EVERY_S,
                                release_timeout_s=0.2)
        try:
            await backend.replicas_ready()
            call = asyncio.create_task(infer(backend, timeout_s=5.0))
            await asyncio.sleep(0.2)
            loopback_dns.set(name, ["127.0.27.2"])
            await backend.replicas_ready()
            answer = await call
            np.testing.assert_array_equal(answer.outputs[OUTPUT], [[6.0], [22.0]])
        finally:
            await backend.close()
            for server in servers:
                await server.stop(None)

    asyncio.run(main())
    assert stuck.calls == 1 and other.calls == 1
