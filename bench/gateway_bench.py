"""Gateway CPU per request and gateway vs direct Triton: the same load through the gateway and
straight at Triton.

Starts the embedded Triton on free loopback ports (repository derived from ``model_repo/``),
then, for each gateway worker count (``--workers``, 1 and 2 by default), the gateway
(``hetgateway gateway --workers N``) in its own process, and for each operating point runs
alternating rounds at a fixed concurrency:

- gateway: ``POST /v1/models/<model>/predict`` with B real Fashion-MNIST test images, as
  multipart ``images`` files or as base64 PNGs in JSON (decoded, preprocessed and shaped into
  the answer by the gateway);
- direct: ``tritonclient.grpc.aio`` ``infer`` of the same B images, already preprocessed by
  this script exactly as the model card says, as one [B, C, H, W] tensor, asking for the same
  outputs.

Operating points (``--points``): batch-1 multipart, batch-1 JSON, batch-16 JSON. Per point it
prints throughput, p50 and p99 latency and the CPU milliseconds per request of the gateway
(parent and workers), of Triton (with its Python-backend stubs: its process group) and of this
load generator, read from ``/proc`` around each round, so they count whatever else runs on
the machine. Targets: gateway CPU per batch-1 request <= 0.5 ms, and gateway/direct
throughput >= 0.8 where the gateway has cores of its own.

That last condition cannot hold on a 2-core machine where Triton, the gateway and the load
generator share both cores, so it is shown two ways. By CPU arithmetic:
``gateway_cores_to_keep_up`` = direct throughput x gateway CPU per request, the cores a gateway
needs to pass on everything Triton answers (ratio 1 with that many cores of its own, ratio
cores / that with fewer). Measured, with ``--pin``: one worker alone on half of the usable CPUs
(on 2 cores: one core), Triton and this load generator on the other half, batch-1 points again
(``pinned``: true in the results).

Reproduce: ``.venv/bin/python bench/gateway_bench.py`` (``make bench-gateway``); options:
``--concurrency 16 --requests 600 --requests-batched 150 --rounds 5 --workers 1 2 --pin``.
Figures are medians over rounds; the ratio is the median of the paired round ratios. The
results go to ``bench/results/gateway-<machine>.json`` with their provenance.

Two ratios are reported because two regimes exist. Measured: the throughputs of this run,
whatever limits them. CPU-bound: when the cores are the limit, throughput is cores / CPU per
request, so the ratio tends to (direct server + client CPU per request) / (gateway + Triton +
client CPU per request), reported as ``cpu_bound_ratio``. (Models with a Triton queue policy
made the direct path wait for 0.5 s stalls and inflated the measured ratio: see
``bench/queue_policy_stall.py``.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np
import psutil
import tritonclient.grpc.aio as grpcaio
from hetcontract import INPUT_NAME, MODEL_CARD_FILENAME, ModelCard
from hetgateway.answer import ANSWER_OUTPUTS
from hetgateway.preprocessing import normalise
from loopback_target import (
    embedded_triton,
    fashion_images,
    free_port,
    percentiles_ms,
    png,
    process_cpu_s,
)
from provenance import provenance
from tritonclient.grpc import InferInput, InferRequestedOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
MEASURED_PATHS = ("server/src", "bench/gateway_bench.py")
TARGET_RATIO = 0.8
TARGET_GATEWAY_CPU_MS = 0.5
"""Gateway CPU per batch-1 request, multipart and JSON."""
NUM_IMAGES = 256
WARMUP_REQUESTS = 50
POINTS = ("multipart:1", "json:1", "json:16")
"""Default operating points, payload:images per request."""
PAYLOADS = ("multipart", "json")
BATCH_SIZES = (1, 16)
TOP_K = 3
CLIENT_TIMEOUT_S = 60
CLIENT_KEEPALIVE_S = 2.0
STOP_TIMEOUT_S = 30
MIN_CPU_MS = 1e-9
"""Guards a ratio against a round too short for the CPU clock's tick."""
BOUNDARY = "hetserve-bench-boundary"


@dataclass(frozen=True)
class Point:
    """An operating point: how the images travel to the gateway, and how many per request."""

    payload: str
    batch: int

    @classmethod
    def parse(cls, text: str) -> Point:
        payload, batch = text.split(":")
        if payload not in PAYLOADS:
            raise argparse.ArgumentTypeError(f"payload must be one of {PAYLOADS}: {text!r}")
        return cls(payload, int(batch))


@dataclass(frozen=True)
class RoundResult:
    """One round: which path at which point, throughput, latency and CPU per request."""

    path: str
    payload: str
    batch: int
    workers: int
    pinned: bool
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
    model_repository = Path(args.model_repository)
    card = ModelCard.model_validate_json(
        (model_repository / args.model / MODEL_CARD_FILENAME).read_text()
    )
    images = fashion_images(limit=NUM_IMAGES)
    workload = Workload(pngs=[png(image) for image in images], tensors=preprocess(images, card))
    rounds: list[RoundResult] = []
    with (tempfile.TemporaryDirectory(prefix="hetserve-bench-") as tmp,
          embedded_triton(model_repository, Path(tmp)) as triton):
        runs = [(workers, False, args.points) for workers in args.workers]
        if args.pin:
            runs.append((1, True, [p for p in args.points if p.batch == 1]))
        for workers, pinned, points in runs:
            gateway, gateway_url = start_gateway(triton.grpc_url, args.concurrency, workers)
            try:
                meter = CpuMeter(gateway.pid, triton_group=triton.pid)
                with pinned_apart(meter, enabled=pinned):
                    rounds += asyncio.run(run_rounds(
                        args, gateway_url, triton.grpc_url, workload, meter,
                        points=points, workers=workers, pinned=pinned,
                    ))
            finally:
                stop_gateway(gateway)
    report = summarise(args, rounds)
    print_report(report)
    write_report(report, "gateway", args.machine)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rounds=5)
    parser.set_defaults(requests=600)
    parser.add_argument("--requests-batched", type=int, default=150,
                        help="requests per round at points of more than one image")
    parser.add_argument("--points", type=Point.parse, nargs="+",
                        default=[Point.parse(p) for p in POINTS],
                        help="operating points, payload:images (multipart:1 json:1 json:16)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="gateway worker counts to measure")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure batch-1 points with one worker pinned apart")
    return parser.parse_args()


def add_load_arguments(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    """The options of the load benchmarks against Triton here (this one, queue_policy_stall)."""
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="rounds per compared path, alternating")
    parser.add_argument("--machine", default=f"{platform.machine()}-{os.cpu_count()}cpu",
                        help="name of this machine in the results file name")


def write_report(report: dict, benchmark: str, machine: str) -> Path:
    """Write ``report`` to ``bench/results/<benchmark>-<machine>.json``; returns the path."""
    output = RESULTS_DIR / f"{benchmark}-{machine}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output.relative_to(REPO_ROOT)}")
    return output


def preprocess(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """float32 [N, C, H, W] = (pixel / scale - mean) / std, per the model card: the gateway's
    own ``normalise``, over the whole batch at once."""
    pixels = np.repeat(images[:, None].astype(np.float32), card.input.shape[0], axis=1)
    return normalise(pixels, card.input)


def start_gateway(
    triton_grpc_url: str, concurrency: int, workers: int
) -> tuple[subprocess.Popen, str]:
    """``hetgateway gateway --workers N`` in its own process group; waits for /readyz and for
    every worker."""
    port = free_port()
    env = dict(os.environ, HETSERVE_TRITON_GRPC_URL=triton_grpc_url, HETSERVE_PORT=str(port),
               HETSERVE_LOG_LEVEL="warning", HETSERVE_MAX_IN_FLIGHT=str(max(64, concurrency)),
               HETSERVE_WORKERS=str(workers))
    process = subprocess.Popen([sys.executable, "-m", "hetgateway.cli", "gateway"], env=env,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200 and len(gateway_workers(process.pid)) >= workers:
                    time.sleep(1.0 if workers > 1 else 0)  # the last worker's startup
                    return process, url
        except OSError:
            pass
        time.sleep(0.2)
    stop_gateway(process)
    raise RuntimeError("gateway did not become ready")


def gateway_workers(pid: int) -> list[int]:
    """The gateway's serving processes: the workers under its parent, or itself alone."""
    children = [c for c in psutil.Process(pid).children()
                if any("spawn_main" in part for part in c.cmdline())]
    return [c.pid for c in children] or [pid]


def stop_gateway(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class CpuMeter:
    """CPU seconds (user + system) used so far by the gateway (its parent and workers), by
    Triton (its process group: the server and its Python-backend stubs) and by this load
    generator: the cost of a request, whatever else runs on the machine."""

    def __init__(self, gateway_pid: int, *, triton_group: int) -> None:
        self._gateway = [gateway_pid, *(c.pid for c in psutil.Process(gateway_pid).children())]
        self._triton_group = triton_group

    def gateway_pids(self) -> list[int]:
        return list(self._gateway)

    def triton_pids(self) -> list[int]:
        found = subprocess.run(["pgrep", "-g", str(self._triton_group)], capture_output=True,
                               text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def gateway_seconds(self) -> float:
        return sum(process_cpu_s(pid) for pid in self._gateway)

    def triton_seconds(self) -> float:
        return sum(process_cpu_s(pid) for pid in self.triton_pids())

    @staticmethod
    def client_seconds() -> float:
        own = os.times()
        return own.user + own.system


class pinned_apart:  # noqa: N801  (a context manager, used like a function)
    """While entered (and ``enabled``): the gateway on the upper half of the usable CPUs,
    Triton and this load generator on the lower half (every thread: ``taskset -a``); all back
    on every usable CPU afterwards."""

    def __init__(self, meter: CpuMeter, *, enabled: bool) -> None:
        self._meter = meter
        cpus = sorted(os.sched_getaffinity(0))
        self._enabled = enabled and len(cpus) >= 2
        self._all = cpus
        self._gateway_cpus = cpus[len(cpus) // 2:]
        self._other_cpus = cpus[: len(cpus) // 2]

    def __enter__(self) -> pinned_apart:
        if self._enabled:
            self._pin(self._meter.gateway_pids(), self._gateway_cpus)
            self._pin([*self._meter.triton_pids(), os.getpid()], self._other_cpus)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._pin([*self._meter.triton_pids(), os.getpid()], self._all)

    @staticmethod
    def _pin(pids: list[int], cpus: list[int]) -> None:
        listed = ",".join(str(cpu) for cpu in cpus)
        for pid in pids:
            subprocess.run(["taskset", "-a", "-cp", listed, str(pid)], capture_output=True,
                           check=False)


@dataclass(frozen=True)
class Workload:
    """The same images two ways: PNG files for the gateway, preprocessed float32
    [N, C, H, W] tensors for Triton."""

    pngs: list[bytes]
    tensors: np.ndarray

    def gateway_payloads(self, point: Point, *, top_k: int) -> tuple[list[bytes], str]:
        """Bodies of ``point.batch`` images each (request i starts at image i), and their
        Content-Type."""
        count = len(self.pngs)
        groups = [[self.pngs[(i + j) % count] for j in range(point.batch)]
                  for i in range(count)]
        if point.payload == "multipart":
            return ([multipart_body(group, top_k=top_k) for group in groups],
                    f"multipart/form-data; boundary={BOUNDARY}")
        return ([json.dumps({"inputs": [{"image": base64.b64encode(data).decode()}
                                        for data in group], "top_k": top_k}).encode()
                 for group in groups], "application/json")

    def direct_batches(self, batch: int) -> list[np.ndarray]:
        """[batch, C, H, W] tensors holding the same images as ``gateway_payloads``."""
        count = len(self.tensors)
        return [self.tensors[[(i + j) % count for j in range(batch)]] for i in range(count)]


def multipart_body(pngs: list[bytes], *, top_k: int) -> bytes:
    """A multipart/form-data body (``BOUNDARY``) of ``images`` files and a ``top_k`` field."""
    parts = [
        (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
         f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data + b"\r\n"
        for i, data in enumerate(pngs)
    ]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n'
                 f"{top_k}\r\n--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


async def run_rounds(args, gateway_url, grpc_url, workload: Workload, meter: CpuMeter, *,
                     points: list[Point], workers: int, pinned: bool) -> list[RoundResult]:
    """Every operating point in turn: warm-up, then gateway and direct rounds alternating."""
    url = f"{gateway_url}/v1/models/{args.model}/predict"
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them, so a
    # gateway round after a long direct round never writes into a connection being closed.
    connector = aiohttp.TCPConnector(limit=args.concurrency,
                                     keepalive_timeout=CLIENT_KEEPALIVE_S)
    outputs = [InferRequestedOutput(name) for name in ANSWER_OUTPUTS]
    rounds: list[RoundResult] = []
    # aiohttp rather than httpx: about a third of httpx's client CPU per request, which on a
    # small machine would otherwise be counted against the gateway.
    async with aiohttp.ClientSession(connector=connector) as http:
        triton = grpcaio.InferenceServerClient(grpc_url)
        try:
            for point in points:
                payloads, content_type = workload.gateway_payloads(point, top_k=TOP_K)
                headers = {"content-type": content_type}
                tensors = workload.direct_batches(point.batch)
                requests = args.requests if point.batch == 1 else args.requests_batched

                async def via_gateway(i: int, payloads=payloads, headers=headers) -> None:
                    async with http.post(url, data=payloads[i % len(payloads)],
                                         headers=headers) as answer:
                        await answer.read()
                        answer.raise_for_status()

                async def direct(i: int, tensors=tensors) -> None:
                    tensor = tensors[i % len(tensors)]
                    infer_input = InferInput(INPUT_NAME, list(tensor.shape), "FP32")
                    infer_input.set_data_from_numpy(tensor)
                    await triton.infer(args.model, [infer_input], outputs=outputs,
                                       client_timeout=CLIENT_TIMEOUT_S)

                await load(via_gateway, WARMUP_REQUESTS, args.concurrency)
                await load(direct, WARMUP_REQUESTS, args.concurrency)
                for _ in range(args.rounds):
                    for name, send in (("gateway", via_gateway), ("direct", direct)):
                        before = (meter.gateway_seconds(), meter.triton_seconds(),
                                  meter.client_seconds())
                        seconds, latencies = await load(send, requests, args.concurrency)
                        after = (meter.gateway_seconds(), meter.triton_seconds(),
                                 meter.client_seconds())
                        rounds.append(result(
                            name, point, workers, pinned, seconds, latencies,
                            cpu_s=[b - a for a, b in zip(before, after, strict=True)],
                        ))
                        print(f"  {workers} worker(s){' pinned' if pinned else ''} "
                              f"{point.payload:9s} batch {point.batch:3d} {name:8s} "
                              f"{rounds[-1].throughput_rps:8.1f} req/s  gateway CPU "
                              f"{rounds[-1].gateway_cpu_ms_per_request:.3f} ms/req",
                              flush=True)
            return rounds
        finally:
            await triton.close()


async def load(send, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """``requests`` calls by ``concurrency`` workers; wall time and per-call latencies."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def result(path: str, point: Point, workers: int, pinned: bool, seconds: float,
           latencies: list[float], *, cpu_s: list[float]) -> RoundResult:
    percentiles = percentiles_ms(latencies)
    count = len(latencies)
    gateway_s, triton_s, client_s = cpu_s
    return RoundResult(path=path, payload=point.payload, batch=point.batch, workers=workers,
                       pinned=pinned, requests=count, seconds=seconds,
                       throughput_rps=count / seconds,
                       p50_ms=percentiles.p50, p99_ms=percentiles.p99,
                       gateway_cpu_ms_per_request=1000 * gateway_s / count,
                       triton_cpu_ms_per_request=1000 * triton_s / count,
                       client_cpu_ms_per_request=1000 * client_s / count)


def summarise(args: argparse.Namespace, rounds: list[RoundResult]) -> dict:
    """Per operating point and worker count: medians over rounds (robust to a round slowed by
    other work on the machine), and the ratio as the median of the paired ratios gateway round
    i / direct round i."""
    keys = list(dict.fromkeys((r.workers, r.pinned, r.payload, r.batch) for r in rounds))
    points = [operating_point(key, [r for r in rounds
                                    if (r.workers, r.pinned, r.payload, r.batch) == key])
              for key in keys]
    return {
        "provenance": provenance(list(MEASURED_PATHS)),
        "benchmark": "gateway CPU per request; gateway vs direct Triton, same images, "
                     "same concurrency",
        "cpu_count": len(os.sched_getaffinity(0)),
        "load_average_1m": os.getloadavg()[0],
        "model": args.model,
        "concurrency": args.concurrency,
        "requests_per_round": args.requests,
        "requests_per_round_batched": args.requests_batched,
        "rounds_per_path": args.rounds,
        "top_k": TOP_K,
        "target_ratio": TARGET_RATIO,
        "target_gateway_cpu_ms_batch_1": TARGET_GATEWAY_CPU_MS,
        "operating_points": points,
        "rounds": [asdict(r) for r in rounds],
    }


def operating_point(key: tuple[int, bool, str, int], rounds: list[RoundResult]) -> dict:
    """Medians of one point's rounds (alternating gateway, direct), the ratios and targets."""
    workers, pinned, payload, batch = key

    def total(path: str) -> dict:
        mine = [r for r in rounds if r.path == path]
        throughput = float(np.median([r.throughput_rps for r in mine]))
        row = {"throughput_rps": throughput, "images_per_s": throughput * batch}
        for name in ("p50_ms", "p99_ms", "gateway_cpu_ms_per_request",
                     "triton_cpu_ms_per_request", "client_cpu_ms_per_request"):
            row[name] = float(np.median([getattr(r, name) for r in mine]))
        return row

    gateway, direct = total("gateway"), total("direct")
    paired = [g.throughput_rps / d.throughput_rps
              for g, d in zip(rounds[0::2], rounds[1::2], strict=True)]
    ratio = float(np.median(paired))
    cpu_bound_ratio = cpu_ms_per_request(direct) / max(cpu_ms_per_request(gateway), MIN_CPU_MS)
    cores_to_keep_up = direct["throughput_rps"] * gateway["gateway_cpu_ms_per_request"] / 1000
    point = {
        "workers": workers,
        "pinned": pinned,
        "payload": payload,
        "batch": batch,
        "gateway": gateway,
        "direct": direct,
        "throughput_ratio": ratio,
        "paired_ratios": paired,
        "cpu_bound_ratio": cpu_bound_ratio,
        "gateway_cores_to_keep_up": cores_to_keep_up,
        "ratio_with_one_core_of_its_own": min(1.0, 1.0 / max(cores_to_keep_up, MIN_CPU_MS)),
        "meets_target": ratio >= TARGET_RATIO,
        "meets_target_cpu_bound": cpu_bound_ratio >= TARGET_RATIO,
    }
    if batch == 1:
        point["meets_gateway_cpu_target"] = (
            gateway["gateway_cpu_ms_per_request"] <= TARGET_GATEWAY_CPU_MS
        )
    return point


def cpu_ms_per_request(row: dict) -> float:
    """Gateway, Triton and load-generator CPU milliseconds one request costs on this machine."""
    return (row["gateway_cpu_ms_per_request"] + row["triton_cpu_ms_per_request"]
            + row["client_cpu_ms_per_request"])


def verdict(meets: bool) -> str:
    """How the report words a figure against its target."""
    return "meets" if meets else "MISSES"


def print_report(report: dict) -> None:
    print(f"model {report['model']}, concurrency {report['concurrency']}, "
          f"{report['rounds_per_path']} rounds per path and point; load average (1 min) "
          f"{report['load_average_1m']:.1f} on {report['cpu_count']} CPUs")
    print(f"{'workers':>7s} {'pinned':>6s} {'payload':9s} {'batch':>5s} {'path':8s} "
          f"{'req/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'gateway CPU':>11s} "
          f"{'Triton CPU':>10s} {'client CPU':>10s}  (ms per request)")
    for point in report["operating_points"]:
        for name in ("gateway", "direct"):
            row = point[name]
            print(f"{point['workers']:7d} {str(point['pinned']):>6s} {point['payload']:9s} "
                  f"{point['batch']:5d} {name:8s} {row['throughput_rps']:8.1f} "
                  f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
                  f"{row['gateway_cpu_ms_per_request']:11.3f} "
                  f"{row['triton_cpu_ms_per_request']:10.3f} "
                  f"{row['client_cpu_ms_per_request']:10.3f}")
    target, cpu_target = report["target_ratio"], report["target_gateway_cpu_ms_batch_1"]
    for point in report["operating_points"]:
        where = (f"{point['workers']} worker(s){', pinned apart' if point['pinned'] else ''}, "
                 f"{point['payload']} batch {point['batch']}")
        gateway_cpu = point["gateway"]["gateway_cpu_ms_per_request"]
        line = f"{where}: gateway CPU {gateway_cpu:.3f} ms/request"
        if "meets_gateway_cpu_target" in point:
            line += f" ({verdict(point['meets_gateway_cpu_target'])} <= {cpu_target} ms)"
        print(line + f"; throughput ratio gateway/direct {point['throughput_ratio']:.2f} "
              f"({verdict(point['meets_target'])} >= {target}); CPU-bound ratio "
              f"{point['cpu_bound_ratio']:.2f}; cores the gateway needs to keep up with "
              f"direct Triton {point['gateway_cores_to_keep_up']:.2f} (ratio with one core "
              f"of its own {point['ratio_with_one_core_of_its_own']:.2f})")
    print(f"command: {report['provenance']['command']}")


if __name__ == "__main__":
    sys.exit(main())
