"""Gateway overhead benchmark: the same load through the gateway and straight at Triton.

Starts the embedded Triton on free loopback ports (repository derived from ``model_repo/``)
and the gateway in its own process, then, for each operating point (images per request, 1 and
16 by default), runs alternating rounds at a fixed concurrency:

- gateway: ``POST /v1/models/<model>/predict`` with B real Fashion-MNIST test images as base64
  PNGs in JSON (decoded, preprocessed and shaped into the answer by the gateway);
- direct: ``tritonclient.grpc.aio`` ``infer`` of the same B images, already preprocessed by
  this script exactly as the model card says, as one [B, C, H, W] tensor, asking for the same
  outputs.

Per operating point it prints throughput (requests/s and images/s), p50 and p99 latency, CPU
milliseconds per request of the servers (gateway + Triton with its Python-backend stubs) and of
this load generator, and the ratio gateway / direct (target >= 0.8); everything goes to
``bench/results/gateway-<machine>.json``. The gateway's per-request work (HTTP, JSON, routing,
one gRPC call) is the same whatever B, so its overhead amortises over the batch while the
per-image work (decode, model) does not.

Reproduce: ``.venv/bin/python bench/gateway_bench.py`` (``make bench-gateway``); options:
``--concurrency 16 --requests 1000 --rounds 7 --batch-sizes 1 16 --model fashion_het``.
Figures are medians over rounds; the ratio is the median of the paired round ratios.

Two ratios are reported because two regimes exist. Measured: the throughputs of this run,
whatever limits them (waiting, as in batching delays, or CPU). CPU-bound: when the cores are the
limit, throughput is cores / CPU per request, so the ratio tends to (direct server + client CPU
per request) / (gateway server + client CPU per request), reported as ``cpu_bound_ratio``. Each
operating point carries a verdict for both against the target: ``meets_target`` (measured) and
``meets_target_cpu_bound``. (Models with a Triton queue policy made the direct path wait for
0.5 s stalls and inflated the measured ratio: see ``bench/queue_policy_stall.py``.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio
from hetcontract import INPUT_NAME, MODEL_CARD_FILENAME, ModelCard
from hetgateway.answer import ANSWER_OUTPUTS
from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository
from hetgateway.preprocessing import normalise
from loopback_target import fashion_images, free_port, percentiles_ms, png
from provenance import write_result
from tritonclient.grpc import InferInput, InferRequestedOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.8
MEASURES = ["server/src/hetgateway", "model_repo/fashion_het", "bench/gateway_bench.py",
            "bench/loopback_target.py"]
"""What the figures measure (the result's provenance): the gateway, the model, this script."""
NUM_IMAGES = 256
WARMUP_REQUESTS = 50
BATCH_SIZES = (1, 16)
"""Default operating points, images per request: the per-request gateway overhead alone, and
amortised over a batch."""
READY_TIMEOUT_S = 240.0
TOP_K = 3
CLIENT_TIMEOUT_S = 60
CLIENT_KEEPALIVE_S = 2.0
MIN_CPU_MS = 1e-9
"""Guards a ratio against a round too short for the CPU clock's tick."""


@dataclass(frozen=True)
class RoundResult:
    """One round: which path at which batch, throughput and latency percentiles."""

    path: str
    batch: int
    requests: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    client_cpu_ms_per_request: float


def main() -> int:
    args = parse_args()
    model_repository = Path(args.model_repository)
    card = ModelCard.model_validate_json(
        (model_repository / args.model / MODEL_CARD_FILENAME).read_text()
    )
    images = fashion_images(limit=NUM_IMAGES)
    workload = Workload(pngs=[png(image) for image in images], tensors=preprocess(images, card))
    with tempfile.TemporaryDirectory(prefix="hetserve-bench-") as tmp:
        workdir = Path(tmp)
        derived = derive_repository([model_repository], workdir / "repo", ort_threads=1)
        triton = TritonProcess(
            [derived.path],
            ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
            backend_dir=build_backend_dir(workdir / "backends"),
            log_path=workdir / "triton.log",
        )
        with triton:
            triton.wait_ready(timeout_s=READY_TIMEOUT_S)
            gateway, gateway_url = start_gateway(triton.grpc_url, args.concurrency)
            try:
                meter = CpuMeter([gateway.pid], group_leaders=[triton.pid])
                rounds = asyncio.run(
                    run_rounds(args, gateway_url, triton.grpc_url, workload, meter)
                )
            finally:
                gateway.terminate()
                gateway.wait(timeout=15)
    report = summarise(args, rounds)
    print_report(report)
    write_report(report, "gateway", args.machine, MEASURES)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rounds=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES),
                        help="images per request, one operating point each")
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


def write_report(report: dict, benchmark: str, machine: str, measures: list[str]) -> Path:
    """Write ``report`` to ``bench/results/<benchmark>-<machine>.json`` with its provenance
    (``measures``: the repository paths whose code the figures measure); returns the path."""
    return write_result(report, benchmark, measures=measures, machine=machine,
                        command=report["command"])


def preprocess(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """float32 [N, C, H, W] = (pixel / scale - mean) / std, per the model card: the gateway's
    own ``normalise``, over the whole batch at once."""
    pixels = np.repeat(images[:, None].astype(np.float32), card.input.shape[0], axis=1)
    return normalise(pixels, card.input)


def start_gateway(triton_grpc_url: str, concurrency: int) -> tuple[subprocess.Popen, str]:
    """``hetgateway gateway`` in its own process; waits for /readyz."""
    port = free_port()
    env = dict(os.environ, HETSERVE_TRITON_GRPC_URL=triton_grpc_url, HETSERVE_PORT=str(port),
               HETSERVE_LOG_LEVEL="warning", HETSERVE_MAX_IN_FLIGHT=str(max(64, concurrency)))
    process = subprocess.Popen([sys.executable, "-m", "hetgateway.cli", "gateway"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("gateway did not become ready")


class CpuMeter:
    """CPU seconds (user + system) used so far by the servers (the gateway, and Triton with its
    Python-backend stubs, Triton's process group) and by this load generator: the cost of a
    request, whatever else runs on the machine."""

    def __init__(self, pids: list[int], *, group_leaders: list[int]) -> None:
        self._pids = pids
        self._groups = group_leaders

    def server_seconds(self) -> float:
        pids = set(self._pids)
        for leader in self._groups:
            found = subprocess.run(["pgrep", "-g", str(leader)], capture_output=True, text=True,
                                   check=False)
            pids.update(int(pid) for pid in found.stdout.split())
        return sum(_process_cpu_s(pid) for pid in pids)

    @staticmethod
    def client_seconds() -> float:
        own = os.times()
        return own.user + own.system


def _process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@dataclass(frozen=True)
class Workload:
    """The same images two ways: PNG files for the gateway, preprocessed float32
    [N, C, H, W] tensors for Triton."""

    pngs: list[bytes]
    tensors: np.ndarray

    def gateway_payloads(self, batch: int, *, top_k: int) -> list[bytes]:
        """JSON bodies of ``batch`` base64 PNGs each, request i starting at image i."""
        encoded = [base64.b64encode(data).decode() for data in self.pngs]
        return [
            json.dumps({"inputs": [{"image": encoded[(i + j) % len(encoded)]}
                                   for j in range(batch)], "top_k": top_k}).encode()
            for i in range(len(encoded))
        ]

    def direct_batches(self, batch: int) -> list[np.ndarray]:
        """[batch, C, H, W] tensors holding the same images as ``gateway_payloads``."""
        count = len(self.tensors)
        return [self.tensors[[(i + j) % count for j in range(batch)]] for i in range(count)]


async def run_rounds(args, gateway_url, grpc_url, workload: Workload, meter) -> list[RoundResult]:
    """Every operating point in turn: warm-up, then gateway and direct rounds alternating."""
    url = f"{gateway_url}/v1/models/{args.model}/predict"
    headers = {"content-type": "application/json"}
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
            for batch in args.batch_sizes:
                payloads = workload.gateway_payloads(batch, top_k=TOP_K)
                tensors = workload.direct_batches(batch)

                async def via_gateway(i: int, payloads=payloads) -> None:
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
                        server_before = meter.server_seconds()
                        client_before = meter.client_seconds()
                        seconds, latencies = await load(send, args.requests, args.concurrency)
                        rounds.append(result(
                            name, batch, seconds, latencies,
                            server_cpu_s=meter.server_seconds() - server_before,
                            client_cpu_s=meter.client_seconds() - client_before,
                        ))
                        print(f"  batch {batch:3d} {name:8s} "
                              f"{rounds[-1].throughput_rps:8.1f} req/s")
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


def result(
    path: str,
    batch: int,
    seconds: float,
    latencies: list[float],
    *,
    server_cpu_s: float,
    client_cpu_s: float,
) -> RoundResult:
    percentiles = percentiles_ms(latencies)
    return RoundResult(path=path, batch=batch, requests=len(latencies), seconds=seconds,
                       throughput_rps=len(latencies) / seconds,
                       p50_ms=percentiles.p50, p99_ms=percentiles.p99,
                       server_cpu_ms_per_request=1000 * server_cpu_s / len(latencies),
                       client_cpu_ms_per_request=1000 * client_cpu_s / len(latencies))


def summarise(args: argparse.Namespace, rounds: list[RoundResult]) -> dict:
    """Per operating point: medians over rounds (robust to a round slowed by other work on the
    machine), and the ratio as the median of the paired ratios gateway round i / direct round
    i."""
    points = [operating_point(batch, [r for r in rounds if r.batch == batch])
              for batch in args.batch_sizes]
    return {
        "benchmark": "gateway vs direct Triton, same images, same concurrency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": args.machine,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "model": args.model,
        "concurrency": args.concurrency,
        "requests_per_round": args.requests,
        "rounds_per_path": args.rounds,
        "top_k": TOP_K,
        "target_ratio": TARGET_RATIO,
        "operating_points": points,
        "rounds": [asdict(r) for r in rounds],
        "command": reproduce_command(args),
    }


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that repeats this run, every option spelled out."""
    return (
        f".venv/bin/python bench/gateway_bench.py --model {args.model} "
        f"--concurrency {args.concurrency} --requests {args.requests} --rounds {args.rounds} "
        f"--batch-sizes {' '.join(str(b) for b in args.batch_sizes)} --machine {args.machine}"
    )


def operating_point(batch: int, rounds: list[RoundResult]) -> dict:
    """Medians of one batch size's rounds (alternating gateway, direct), and the ratios."""

    def total(path: str) -> dict:
        mine = [r for r in rounds if r.path == path]
        throughput = float(np.median([r.throughput_rps for r in mine]))
        return {
            "throughput_rps": throughput,
            "images_per_s": throughput * batch,
            "p50_ms": float(np.median([r.p50_ms for r in mine])),
            "p99_ms": float(np.median([r.p99_ms for r in mine])),
            "server_cpu_ms_per_request": float(
                np.median([r.server_cpu_ms_per_request for r in mine])),
            "client_cpu_ms_per_request": float(
                np.median([r.client_cpu_ms_per_request for r in mine])),
        }

    gateway, direct = total("gateway"), total("direct")
    paired = [g.throughput_rps / d.throughput_rps
              for g, d in zip(rounds[0::2], rounds[1::2], strict=True)]
    ratio = float(np.median(paired))
    cpu_bound_ratio = cpu_ms_per_request(direct) / max(cpu_ms_per_request(gateway), MIN_CPU_MS)
    return {
        "batch": batch,
        "gateway": gateway,
        "direct": direct,
        "throughput_ratio": ratio,
        "paired_ratios": paired,
        "ratio_of_median_throughputs": gateway["throughput_rps"] / direct["throughput_rps"],
        "gateway_server_cpu_ms_added_per_request": gateway["server_cpu_ms_per_request"]
        - direct["server_cpu_ms_per_request"],
        "server_cpu_ratio_direct_over_gateway": direct["server_cpu_ms_per_request"]
        / max(gateway["server_cpu_ms_per_request"], MIN_CPU_MS),
        "cpu_bound_ratio": cpu_bound_ratio,
        "meets_target": ratio >= TARGET_RATIO,
        "meets_target_cpu_bound": cpu_bound_ratio >= TARGET_RATIO,
    }


def cpu_ms_per_request(row: dict) -> float:
    """Server plus load-generator CPU milliseconds one request costs on this machine."""
    return row["server_cpu_ms_per_request"] + row["client_cpu_ms_per_request"]


def verdict(meets: bool) -> str:
    """How the report words a ratio against the target."""
    return "meets" if meets else "MISSES"


def print_report(report: dict) -> None:
    print(f"model {report['model']}, concurrency {report['concurrency']}, "
          f"{report['rounds_per_path']} x {report['requests_per_round']} requests per path and "
          f"batch; load average (1 min) {report['load_average_1m']:.1f} on "
          f"{report['cpu_count']} CPUs")
    print(f"{'batch':>5s} {'path':8s} {'req/s':>8s} {'img/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'server CPU ms/req':>18s} {'client CPU ms/req':>18s}")
    for point in report["operating_points"]:
        for name in ("gateway", "direct"):
            row = point[name]
            print(f"{point['batch']:5d} {name:8s} {row['throughput_rps']:8.1f} "
                  f"{row['images_per_s']:8.1f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
                  f"{row['server_cpu_ms_per_request']:18.2f} "
                  f"{row['client_cpu_ms_per_request']:18.2f}")
    target = report["target_ratio"]
    for point in report["operating_points"]:
        print(f"batch {point['batch']}: measured throughput ratio gateway/direct = "
              f"{point['throughput_ratio']:.2f} ({verdict(point['meets_target'])} the {target} "
              f"target); CPU-bound ratio {point['cpu_bound_ratio']:.2f} "
              f"({verdict(point['meets_target_cpu_bound'])} the {target} target); "
              f"paired round ratios {', '.join(f'{r:.2f}' for r in point['paired_ratios'])}; "
              f"ratio of median throughputs {point['ratio_of_median_throughputs']:.2f}; "
              f"gateway adds {point['gateway_server_cpu_ms_added_per_request']:.2f} ms server "
              f"CPU per request")
    print(f"reproduce: {report['command']}")


if __name__ == "__main__":
    sys.exit(main())
