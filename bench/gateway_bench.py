"""The gateway against calling Triton directly: throughput, latency and CPU per request, with
request coalescing on and off, in one run.

Starts the embedded Triton on free loopback ports (repository derived from ``model_repo/``),
and two gateways in front of it (``hetgateway gateway``, one worker each, as ``make serve``
runs on two cores): one coalescing concurrent requests (the default), one sending every
request alone (``HETSERVE_COALESCE=false``). Then, for each operating point (images per
request, concurrent clients), it runs time-boxed rounds of each path in turn, the order
rotating from round to round:

- ``gateway`` / ``gateway_alone``: ``POST /v1/models/<model>/predict`` with B real
  Fashion-MNIST test images as base64 PNGs in JSON (or multipart files), decoded,
  preprocessed and shaped into the answer by the gateway;
- ``direct_grpc``: KServe ``ModelInfer`` of the same B images, already preprocessed by this
  script as the model card says, as one [B, C, H, W] tensor, through the generated gRPC stub
  (the leanest Python client there is), asking for the same outputs;
- ``direct_http``: the same call over Triton's HTTP endpoint with the binary tensor extension,
  through the same HTTP client as the gateway's requests (aiohttp);
- ``gateway_one_call`` (with ``--one-call-per-replica``): the coalescing gateway with one call
  slot per Triton replica (``HETSERVE_TRITON_CALLS_PER_REPLICA=1``) instead of the default two:
  larger batches, but Triton idles while the gateway gathers the next one;
- ``gateway_granian`` (with ``--granian``): the same app, coalescing, served by granian (one
  worker) instead of uvicorn: whether another ASGI server serves this app with less CPU
  (granian is a benchmark-only dependency: ``bench/requirements-asgi.txt``).

Per path and point: throughput, p50 and p99 latency, and the CPU milliseconds per request of
the gateway that served it (its process and workers), of Triton (its process group, with the
Python-backend stubs) and of this load generator, read from ``/proc`` around each round, so
they count whatever else the machine runs. Figures are medians over rounds; ratios are medians
of the paired round ratios (round i of one path against round i of the other), robust to a
round slowed by other work on a shared machine.

Targets (issue 21): through the gateway at least as many requests per second as calling
Triton directly with one image per call, for 1-image requests at 8 concurrent clients, and at
least 0.6 of direct Triton's rate for 8-image requests; gateway CPU per 1-image request at
most 0.5 ms; with one client, the coalescing gateway's p50 within 0.3 ms of the uncoalesced
one (a lone request never waits).

Reproduce: ``make bench-gateway`` (``.venv/bin/python bench/gateway_bench.py --granian
--one-call-per-replica``); options: ``--round-s 3 --rounds 3 --concurrency 1 8 32 --images 1 8
--multipart --granian --one-call-per-replica``.
The result goes to ``bench/results/gateway-<machine>.json`` with its provenance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import psutil
from hetcontract import INPUT_NAME, MODEL_CARD_FILENAME, ModelCard
from hetgateway.answer import ANSWER_OUTPUTS
from loopback_target import (
    embedded_triton,
    fashion_images,
    free_port,
    load_for,
    percentiles_ms,
    png,
    preprocess,
    process_cpu_s,
    process_group_cpu_s,
)
from provenance import write_result
from tritonclient.grpc import service_pb2, service_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO_ONE_IMAGE = 1.0
TARGET_RATIO_EIGHT_IMAGES = 0.6
TARGET_GATEWAY_CPU_MS = 0.5
TARGET_P50_DELTA_MS = 0.3
NUM_IMAGES = 256
WARMUP_S = 1.0
TOP_K = 3
STOP_TIMEOUT_S = 30
READY_TIMEOUT_S = 60
CLIENT_KEEPALIVE_S = 2.0
BOUNDARY = "hetserve-bench-boundary"
GATEWAY_PATHS = ("gateway", "gateway_alone", "gateway_one_call", "gateway_granian")
DIRECT_PATHS = ("direct_grpc", "direct_http")


@dataclass(frozen=True)
class Point:
    """An operating point: how images travel to the gateway, how many per request, and how
    many clients send at once."""

    payload: str
    images: int
    concurrency: int


@dataclass(frozen=True)
class RoundResult:
    """One round of one path at one point."""

    path: str
    payload: str
    images: int
    concurrency: int
    requests: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms_per_request: float
    triton_cpu_ms_per_request: float
    client_cpu_ms_per_request: float


def main() -> int:
    args = parse_args()
    repository = Path(args.model_repository)
    workload = Workload.of_model(repository, args.model)
    with (tempfile.TemporaryDirectory(prefix="hetserve-bench-") as tmp,
          embedded_triton(repository, Path(tmp)) as triton):
        gateways = {"gateway": start_gateway(triton.grpc_url, coalesce=True),
                    "gateway_alone": start_gateway(triton.grpc_url, coalesce=False)}
        if args.one_call_per_replica:
            gateways["gateway_one_call"] = start_gateway(triton.grpc_url, coalesce=True,
                                                         calls_per_replica=1)
        if args.granian:
            gateways["gateway_granian"] = start_gateway(triton.grpc_url, coalesce=True,
                                                        server="granian")
        try:
            rounds = asyncio.run(run_points(args, workload, gateways, triton))
        finally:
            for process, _ in gateways.values():
                stop_gateway(process)
    report = summarise(args, rounds)
    print_report(report)
    write_result(report, "gateway", measures=[f"model_repo/{args.model}"])
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--images", type=int, nargs="+", default=[1, 8],
                        help="images per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent clients")
    parser.add_argument("--multipart", action=argparse.BooleanOptionalAction, default=True,
                        help="also 1-image multipart requests at 8 clients (CPU per request)")
    parser.add_argument("--granian", action=argparse.BooleanOptionalAction, default=False,
                        help="also the coalescing app served by granian instead of uvicorn")
    parser.add_argument("--one-call-per-replica", action=argparse.BooleanOptionalAction,
                        default=False, help="also the coalescing gateway with one call slot "
                        "per Triton replica (the default is two)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path and point")
    parser.add_argument("--round-s", type=float, default=3.0, help="seconds per round")
    return parser.parse_args()


def points(args: argparse.Namespace) -> list[Point]:
    grid = [Point("json", images, clients)
            for images, clients in itertools.product(args.images, args.concurrency)]
    return grid + ([Point("multipart", 1, 8)] if args.multipart else [])


def start_gateway(triton_grpc_url: str, *, coalesce: bool, server: str = "uvicorn",
                  calls_per_replica: int | None = None) -> tuple[subprocess.Popen, str]:
    """``hetgateway gateway`` (one worker; ``server="granian"``: the same app factory under
    granian, one worker; ``calls_per_replica`` None: the gateway's default) in its own
    process group, ready."""
    port = free_port()
    env = dict(os.environ, HETSERVE_TRITON_GRPC_URL=triton_grpc_url, HETSERVE_PORT=str(port),
               HETSERVE_LOG_LEVEL="warning", HETSERVE_MAX_IN_FLIGHT="1024",
               HETSERVE_WORKERS="1", HETSERVE_COALESCE=str(coalesce).lower(),
               HETSERVE_DRAIN_S="0")
    if calls_per_replica is not None:
        env["HETSERVE_TRITON_CALLS_PER_REPLICA"] = str(calls_per_replica)
    command = [sys.executable, "-m", "hetgateway.cli", "gateway"]
    if server == "granian":
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws",
                   "--log-level", "warning", "hetgateway.app:create_app"]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            pass
        time.sleep(0.2)
    stop_gateway(process)
    raise RuntimeError("gateway did not become ready")


def stop_gateway(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and every process under it."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    return process_cpu_s(pid) + sum(process_cpu_s(child.pid) for child in children)


def client_cpu_s() -> float:
    own = os.times()
    return own.user + own.system


@dataclass(frozen=True)
class Workload:
    """The same images two ways: PNG files for the gateway, preprocessed float32
    [N, C, H, W] tensors for Triton."""

    pngs: list[bytes]
    tensors: np.ndarray

    @classmethod
    def of_model(cls, repository: Path, model: str) -> Workload:
        """The first ``NUM_IMAGES`` Fashion-MNIST test images, preprocessed as ``model``'s
        card in ``repository`` says."""
        card = ModelCard.model_validate_json((repository / model / MODEL_CARD_FILENAME)
                                             .read_text())
        images = fashion_images(limit=NUM_IMAGES)
        return cls([png(image) for image in images], preprocess(images, card))

    def gateway_bodies(self, point: Point) -> tuple[list[bytes], str]:
        """Bodies of ``point.images`` images each (body i starts at image i), and their
        Content-Type."""
        groups = [[self.pngs[(i + j) % len(self.pngs)] for j in range(point.images)]
                  for i in range(len(self.pngs))]
        if point.payload == "multipart":
            return ([multipart_body(group) for group in groups],
                    f"multipart/form-data; boundary={BOUNDARY}")
        return ([json.dumps({"inputs": [{"image": base64.b64encode(data).decode()}
                                        for data in group], "top_k": TOP_K}).encode()
                 for group in groups], "application/json")

    def batches(self, images: int) -> list[np.ndarray]:
        """[images, C, H, W] tensors holding the same images as ``gateway_bodies``."""
        count = len(self.tensors)
        return [np.ascontiguousarray(self.tensors[[(i + j) % count for j in range(images)]])
                for i in range(count)]


def multipart_body(pngs: list[bytes]) -> bytes:
    """A multipart/form-data body (``BOUNDARY``) of ``images`` files and a ``top_k`` field."""
    parts = [
        (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
         f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data + b"\r\n"
        for i, data in enumerate(pngs)
    ]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n'
                 f"{TOP_K}\r\n--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def grpc_request(model: str, batch: np.ndarray) -> service_pb2.ModelInferRequest:
    """The ``ModelInferRequest`` the gateway itself sends for ``batch``."""
    requested = service_pb2.ModelInferRequest.InferRequestedOutputTensor
    return service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(
            name=INPUT_NAME, datatype="FP32", shape=batch.shape)],
        outputs=[requested(name=name) for name in ANSWER_OUTPUTS],
        raw_input_contents=[batch.tobytes()],
    )


def http_request(batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A Triton HTTP inference body with the binary tensor extension, and its headers."""
    header = json.dumps({
        "inputs": [{"name": INPUT_NAME, "shape": list(batch.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": batch.nbytes}}],
        "outputs": [{"name": name, "parameters": {"binary_data": True}}
                    for name in ANSWER_OUTPUTS],
    }).encode()
    return header + batch.tobytes(), {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))}


async def run_points(args, workload: Workload, gateways: dict, triton) -> list[RoundResult]:
    """Every point in turn: a warm-up of each path, then rounds of every path, rotating."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=CLIENT_KEEPALIVE_S)
    channel = grpc.aio.insecure_channel(triton.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    triton_http = f"http://{triton.http_url}/v2/models/{args.model}/infer"
    rounds: list[RoundResult] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            for point in points(args):
                senders = path_senders(args, point, workload, gateways, http, stub,
                                       triton_http)
                for send in senders.values():
                    await load_for(send, WARMUP_S, point.concurrency)
                for i in range(args.rounds):
                    names = list(senders)
                    for name in names[i % len(names):] + names[: i % len(names)]:
                        rounds.append(await measure(name, point, senders[name], args.round_s,
                                                    gateway_pid=gateway_pid(gateways, name),
                                                    triton_pid=triton.pid))
                        print_round(rounds[-1])
        finally:
            await channel.close()
    return rounds


def gateway_pid(gateways: dict, path: str) -> int | None:
    """The process whose CPU a round of ``path`` is charged to: its gateway (None: direct)."""
    return gateways[path][0].pid if path in gateways else None


def path_senders(args, point: Point, workload: Workload, gateways: dict, http, stub,
                 triton_http: str) -> dict:
    """The paths measured at ``point``: one coroutine function per path, sending request i."""
    senders = {name: gateway_sender(http, gateways[name][1], args.model, workload, point)
               for name in GATEWAY_PATHS if name in gateways}
    if point.payload != "json":  # the direct paths take no payload; measured at the JSON points
        return senders
    batches = workload.batches(point.images)
    grpc_requests = [grpc_request(args.model, batch) for batch in batches]
    http_requests = [http_request(batch) for batch in batches]

    async def direct_grpc(i: int) -> None:
        await stub.ModelInfer(grpc_requests[i % len(grpc_requests)], timeout=60)

    async def direct_http(i: int) -> None:
        body, http_headers = http_requests[i % len(http_requests)]
        async with http.post(triton_http, data=body, headers=http_headers) as answer:
            await answer.read()
            answer.raise_for_status()

    return {**senders, "direct_grpc": direct_grpc, "direct_http": direct_http}


def gateway_sender(http: aiohttp.ClientSession, url: str, model: str, workload: Workload,
                   point: Point):
    """A coroutine function sending ``point``'s request i to the gateway at ``url`` and
    reading the whole answer (an error status raises)."""
    bodies, content_type = workload.gateway_bodies(point)
    endpoint, headers = f"{url}/v1/models/{model}/predict", {"content-type": content_type}

    async def send(i: int) -> None:
        async with http.post(endpoint, data=bodies[i % len(bodies)], headers=headers) as answer:
            await answer.read()
            answer.raise_for_status()
    return send


async def measure(name: str, point: Point, send, seconds: float, *, gateway_pid: int | None,
                  triton_pid: int) -> RoundResult:
    """One round of one path, with the CPU each process spent on it."""
    def cpu() -> tuple[float, float, float]:
        gateway = process_tree_cpu_s(gateway_pid) if gateway_pid is not None else 0.0
        return gateway, process_group_cpu_s(triton_pid), client_cpu_s()

    before = cpu()
    wall, latencies = await load_for(send, seconds, point.concurrency)
    gateway_s, triton_s, client_s = (b - a for a, b in zip(before, cpu(), strict=True))
    count = len(latencies)
    percentiles = percentiles_ms(latencies)
    return RoundResult(
        path=name, payload=point.payload, images=point.images, concurrency=point.concurrency,
        requests=count, seconds=wall, throughput_rps=count / wall,
        p50_ms=percentiles.p50, p99_ms=percentiles.p99,
        gateway_cpu_ms_per_request=1000 * gateway_s / count,
        triton_cpu_ms_per_request=1000 * triton_s / count,
        client_cpu_ms_per_request=1000 * client_s / count)


def print_round(r: RoundResult) -> None:
    print(f"  {r.payload:9s} {r.images} img x {r.concurrency:2d} clients {r.path:16s} "
          f"{r.throughput_rps:8.1f} req/s  p50 {r.p50_ms:6.2f} ms  gateway CPU "
          f"{r.gateway_cpu_ms_per_request:.3f} ms/req", flush=True)


def summarise(args: argparse.Namespace, rounds: list[RoundResult]) -> dict:
    """Per point: each path's medians over rounds, the paired ratios, and the targets."""
    keys = list(dict.fromkeys((r.payload, r.images, r.concurrency) for r in rounds))
    table = [point_summary(key, [r for r in rounds
                                 if (r.payload, r.images, r.concurrency) == key])
             for key in keys]
    return {
        "benchmark": "gateway (coalescing on and off) vs direct Triton (gRPC and HTTP), "
                     "same images, same concurrency",
        "cpu_count": len(os.sched_getaffinity(0)),
        "model": args.model,
        "round_s": args.round_s,
        "rounds_per_path": args.rounds,
        "top_k": TOP_K,
        "gateway_workers": 1,
        "points": table,
        "targets": targets(table),
        "rounds": [asdict(r) for r in rounds],
    }


def point_summary(key: tuple[str, int, int], rounds: list[RoundResult]) -> dict:
    payload, images, concurrency = key
    paths = list(dict.fromkeys(r.path for r in rounds))
    summary: dict = {"payload": payload, "images": images, "concurrency": concurrency,
                     "name": f"{payload}:{images}x{concurrency}"}
    for path in paths:
        mine = [r for r in rounds if r.path == path]
        summary[path] = {field: float(np.median([getattr(r, field) for r in mine]))
                         for field in ("throughput_rps", "p50_ms", "p99_ms",
                                       "gateway_cpu_ms_per_request",
                                       "triton_cpu_ms_per_request",
                                       "client_cpu_ms_per_request")}
        summary[path]["images_per_s"] = summary[path]["throughput_rps"] * images
    by_path = {path: [r for r in rounds if r.path == path] for path in paths}
    if all(path in by_path for path in DIRECT_PATHS):
        best_direct = [max(g.throughput_rps, h.throughput_rps) for g, h in zip(
            by_path["direct_grpc"], by_path["direct_http"], strict=True)]
        for path in (path for path in GATEWAY_PATHS if path in by_path):
            summary[f"{path}_vs_direct"] = float(np.median(
                [mine.throughput_rps / best
                 for mine, best in zip(by_path[path], best_direct, strict=True)]))
    summary["coalesced_vs_alone"] = paired_ratio(by_path["gateway"], by_path["gateway_alone"])
    for path, name in (("gateway_one_call", "one_call_vs_two"),
                       ("gateway_granian", "granian_vs_uvicorn")):
        if path in by_path:
            summary[name] = paired_ratio(by_path[path], by_path["gateway"])
            summary[f"{name}_cpu_per_request"] = paired_ratio(
                by_path[path], by_path["gateway"], field="gateway_cpu_ms_per_request")
    return summary


def paired_ratio(mine: list[RoundResult], theirs: list[RoundResult], *,
                 field: str = "throughput_rps") -> float:
    """The median over rounds i of ``mine[i].field / theirs[i].field``."""
    return float(np.median([getattr(a, field) / getattr(b, field)
                            for a, b in zip(mine, theirs, strict=True)]))


def targets(table: list[dict]) -> dict:
    """Each target's figure, its bound and whether it is met."""
    def point(payload: str, images: int, concurrency: int) -> dict | None:
        return next((p for p in table if (p["payload"], p["images"], p["concurrency"])
                     == (payload, images, concurrency)), None)

    found: dict = {}
    one, eight, lone = point("json", 1, 8), point("json", 8, 8), point("json", 1, 1)
    if one is not None:
        found["ratio_one_image_8_clients"] = {
            "figure": one["gateway_vs_direct"], "target": TARGET_RATIO_ONE_IMAGE,
            "met": one["gateway_vs_direct"] >= TARGET_RATIO_ONE_IMAGE}
        found["gateway_cpu_ms_json_one_image"] = {
            "figure": one["gateway"]["gateway_cpu_ms_per_request"],
            "target": TARGET_GATEWAY_CPU_MS,
            "met": one["gateway"]["gateway_cpu_ms_per_request"] <= TARGET_GATEWAY_CPU_MS}
    if eight is not None:
        found["ratio_eight_images_8_clients"] = {
            "figure": eight["gateway_vs_direct"], "target": TARGET_RATIO_EIGHT_IMAGES,
            "met": eight["gateway_vs_direct"] >= TARGET_RATIO_EIGHT_IMAGES}
    multipart = point("multipart", 1, 8)
    if multipart is not None:
        cpu = multipart["gateway"]["gateway_cpu_ms_per_request"]
        found["gateway_cpu_ms_multipart_one_image"] = {
            "figure": cpu, "target": TARGET_GATEWAY_CPU_MS, "met": cpu <= TARGET_GATEWAY_CPU_MS}
    if lone is not None:
        delta = lone["gateway"]["p50_ms"] - lone["gateway_alone"]["p50_ms"]
        found["p50_one_client_coalesced_minus_alone_ms"] = {
            "figure": delta, "target": TARGET_P50_DELTA_MS, "met": delta <= TARGET_P50_DELTA_MS}
    return found


def print_report(report: dict) -> None:
    print(f"model {report['model']}, {report['rounds_per_path']} rounds of "
          f"{report['round_s']} s per path and point, {report['cpu_count']} CPUs")
    print(f"{'point':18s} {'path':16s} {'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'gateway':>8s} {'Triton':>7s} {'client':>7s}  (CPU ms per request)")
    for p in report["points"]:
        for path in (*GATEWAY_PATHS, *DIRECT_PATHS):
            if path not in p:
                continue
            row = p[path]
            print(f"{p['name']:18s} {path:16s} {row['throughput_rps']:8.1f} "
                  f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                  f"{row['gateway_cpu_ms_per_request']:8.3f} "
                  f"{row['triton_cpu_ms_per_request']:7.3f} "
                  f"{row['client_cpu_ms_per_request']:7.3f}")
        ratios = ", ".join(f"{k} {p[k]:.2f}" for k in ("gateway_vs_direct",
                                                       "gateway_alone_vs_direct",
                                                       "coalesced_vs_alone",
                                                       "one_call_vs_two",
                                                       "one_call_vs_two_cpu_per_request",
                                                       "granian_vs_uvicorn",
                                                       "granian_vs_uvicorn_cpu_per_request")
                          if k in p)
        print(f"{'':18s} ratios: {ratios}")
    for name, target in report["targets"].items():
        verdict = "meets" if target["met"] else "MISSES"
        print(f"{name}: {target['figure']:.3f} ({verdict} target {target['target']})")


if __name__ == "__main__":
    sys.exit(main())
