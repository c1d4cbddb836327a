"""What a Triton 2.51 answers while it shuts down: the embedded Triton (``tritonserver`` of the
nvidia-pytriton wheel, explicit model control as ``hetgateway triton`` runs it, its exit
timeout) under steady gRPC load from 8 clients, probed every few milliseconds
(``ServerReady``, ``ServerLive``, ``ModelReady``), gets SIGTERM; every answer is recorded
until the process has exited, and the timeline printed: for each kind of call, each change of
answer (status code and message) with its time after the signal and how many answers it held.

This is what the gateway's handling of a leaving replica rests on (``hetgateway.triton_errors``:
which status codes send a call to another replica; ``hetgateway.embedded.launcher``: why
``hetgateway triton`` drains by waiting).

Reproduce: ``make bench-rolling`` (``.venv/bin/python bench/triton_shutdown.py``); writes
``bench/results/triton-shutdown-<machine>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from hetcontract import INPUT_NAME
from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository
from hetgateway.embedded.triton_process import DEFAULT_EXIT_TIMEOUT_S
from hetgateway.triton_channel import TritonChannel
from loopback_target import free_port
from provenance import REPO_ROOT, write_result
from tritonclient.grpc import service_pb2

MODEL = "fashion_het"
CLIENTS = 8
LOAD_BEFORE_S = 1.0
AFTER_EXIT_S = 0.5
PROBE_EVERY_S = 0.005
CALL_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 0.5
KINDS = ("infer", "server_ready", "server_live", "model_ready")
CONNECT_FAILED = "UNAVAILABLE: failed to connect"
"""How gRPC says nothing listens any more (Triton's gRPC server has stopped)."""


@dataclass(frozen=True)
class Observed:
    """One answer: when its call started (s after SIGTERM), the kind of call, the answer."""

    at_s: float
    kind: str
    answer: str


async def observe(repository: Path, workdir: Path, *, exit_timeout_s: int) -> dict[str, object]:
    derived = derive_repository([repository], workdir / "repo")
    triton = TritonProcess([derived.path], ports=TritonPorts(free_port(), free_port(),
                                                             free_port()),
                           backend_dir=build_backend_dir(workdir / "backends"),
                           log_path=workdir / "triton.log", explicit_model_control=True,
                           exit_timeout_s=exit_timeout_s)
    triton.start()
    try:
        triton.wait_ready(timeout_s=240)
        channel = TritonChannel(triton.grpc_url, max_reconnect_backoff_ms=500)
        batch = np.zeros((1, 1, 28, 28), np.float32)
        request = service_pb2.ModelInferRequest(
            model_name=MODEL, raw_input_contents=[batch.tobytes()],
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name=INPUT_NAME, datatype="FP32", shape=batch.shape)])
        observed: list[tuple[float, str, str]] = []
        stop = asyncio.Event()

        async def call(kind: str, pending) -> None:
            started = time.monotonic()
            try:
                answer = await pending
                text = "OK" if kind in ("infer", "server_live") else f"ready={answer.ready}"
            except grpc.aio.AioRpcError as error:
                text = f"{error.code().name}: {(error.details() or '').split(';')[0][:80]}"
            observed.append((started, kind, text))

        async def client() -> None:
            while not stop.is_set():
                await call("infer", channel.stub.ModelInfer(request, timeout=CALL_TIMEOUT_S))

        async def prober() -> None:
            while not stop.is_set():
                await asyncio.gather(
                    call("server_ready", channel.stub.ServerReady(
                        service_pb2.ServerReadyRequest(), timeout=PROBE_TIMEOUT_S)),
                    call("server_live", channel.stub.ServerLive(
                        service_pb2.ServerLiveRequest(), timeout=PROBE_TIMEOUT_S)),
                    call("model_ready", channel.stub.ModelReady(
                        service_pb2.ModelReadyRequest(name=MODEL), timeout=PROBE_TIMEOUT_S)))
                await asyncio.sleep(PROBE_EVERY_S)

        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        tasks.append(asyncio.create_task(prober()))
        await asyncio.sleep(LOAD_BEFORE_S)
        signalled = time.monotonic()
        assert triton.process is not None
        triton.process.send_signal(signal.SIGTERM)
        while triton.process.poll() is None:
            await asyncio.sleep(0.01)
        exited_s = time.monotonic() - signalled
        return_code = triton.process.returncode
        await asyncio.sleep(AFTER_EXIT_S)
        stop.set()
        await asyncio.gather(*tasks)
        await channel.close()
    finally:
        triton.stop()
    answers = [Observed(at - signalled, kind, text) for at, kind, text in sorted(observed)]
    return {"exit_timeout_s": exit_timeout_s, "exited_after_s": round(exited_s, 3),
            "return_code": return_code,
            "milestones_s": {
                "infer_not_found_from": first(answers, "infer", "NOT_FOUND"),
                "server_ready_exiting_from": first(answers, "server_ready", "UNAVAILABLE"),
                "server_live_exiting_from": first(answers, "server_live", "UNAVAILABLE"),
                "grpc_refused_from": first(answers, None, CONNECT_FAILED),
            },
            "timeline": {kind: phases([a for a in answers if a.kind == kind]) for kind in KINDS}}


def first(answers: list[Observed], kind: str | None, starts: str) -> float | None:
    """When the first call (of ``kind``; None: any) started after the signal whose answer
    starts with ``starts``; None if none did."""
    return next((round(a.at_s, 3) for a in answers
                 if a.at_s >= 0 and (kind is None or a.kind == kind)
                 and a.answer.startswith(starts)), None)


def phases(answers: list[Observed]) -> list[dict[str, object]]:
    """Runs of one same answer: the answer, when the first of the run started (s after
    SIGTERM; negative: before it) and how many answers the run held."""
    runs: list[dict[str, object]] = []
    for answer in answers:
        if runs and runs[-1]["answer"] == answer.answer:
            runs[-1]["count"] += 1
            continue
        runs.append({"answer": answer.answer, "from_s": round(answer.at_s, 3), "count": 1})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exit-timeout", type=int, default=DEFAULT_EXIT_TIMEOUT_S,
                        help="Triton's --exit-timeout-secs")
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hetserve-shutdown-") as tmp:
        result = asyncio.run(observe(args.model_repository, Path(tmp),
                                     exit_timeout_s=args.exit_timeout))
    print(f"SIGTERM under load from {CLIENTS} clients; exit timeout {result['exit_timeout_s']} s;"
          f" exited {result['exited_after_s']} s after the signal "
          f"(code {result['return_code']})")
    for milestone, at_s in result["milestones_s"].items():
        print(f"{milestone:28s} {at_s} s after the signal")
    for kind, runs in result["timeline"].items():
        print(f"-- {kind}")
        for run in runs:
            print(f"  {run['from_s']:+8.3f} s  {run['answer']}  (x{run['count']})")
    write_result({"clients": CLIENTS, "model": MODEL, **result}, "triton-shutdown",
                 measures=["model_repo"])


if __name__ == "__main__":
    main()
