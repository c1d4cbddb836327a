"""Soak benchmark: a bounded Locust run against the gateway, with resident memory sampled
through it.

Typical usage::

    .venv/bin/python bench/soak.py --serve model_repo       # starts hetgateway serve itself
    .venv/bin/python bench/soak.py --url http://127.0.0.1:8080 --triton-port 8001  # make serve
    .venv/bin/python bench/soak.py --serve model_repo --users 20 --duration 60s

With ``--serve REPO`` the script runs ``hetgateway serve --model-repository REPO`` on free
loopback ports and stops it at the end; otherwise it targets a running gateway (``--url``) and
Triton (``--triton-port``, its gRPC port). It warms up with every request shape the Locust file
sends (batches of 1, 8 and 32 as JSON, 4 as multipart, each model) from ``--users`` concurrent
clients, so that first-use allocations (ONNX Runtime arenas per batch size, connection and
gRPC buffers at that concurrency) are not counted as growth, then
runs ``tests/load/locustfile.py`` headless for ``--duration`` with ``--users`` users and prints
requests/s, p50/p95/p99, failures, and the resident memory (RSS) of the gateway process (the one
listening on the gateway's port) and of Triton (the process listening on the gRPC port plus its
children, the Python-backend stubs) at the start, the middle and the end of the run.
Targets: 0 failures and memory growth (start to end) under 10 %. Loopback targets only.
The figures go to ``bench/results/soak-<machine>.json`` with their provenance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import psutil
from loopback_target import SERVED_STACK_CODE, fashion_pngs, loopback_url, served_stack
from provenance import write_result

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"
MEASURES = [*SERVED_STACK_CODE, "tests/load/locustfile.py", "bench/soak.py"]
sys.path.insert(0, str(LOCUSTFILE.parent))  # the Locust CSV reader that run_locust.sh uses
from locust_summary import AGGREGATED, Row, read_stats  # noqa: E402

WARMUP_ROUNDS = 5
WARMUP_JSON_BATCHES = (1, 8, 32)
WARMUP_MULTIPART_BATCH = 4
WARMUP_IMAGES = 64
MAX_MEMORY_GROWTH = 0.10
BYTES_PER_MIB = 1024 * 1024
LOCUST_GRACE_S = 60
SAMPLE_INTERVAL_S = 10.0
KEEPALIVE_EXPIRY_S = 2.0


class Memory(NamedTuple):
    """Resident memory in MiB, at ``elapsed_s`` seconds into the run."""

    elapsed_s: float
    gateway_mib: float
    triton_mib: float


def _listener_pid(port: int) -> int:
    """The process listening on ``port`` on this machine."""
    for connection in psutil.net_connections(kind="tcp"):
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if listening and connection.pid is not None:
            return connection.pid
    raise RuntimeError(f"no process listens on port {port}: is the server running?")


def _tree_rss_mib(process: psutil.Process) -> float:
    members = [process, *process.children(recursive=True)]
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / BYTES_PER_MIB


class MemorySampler:
    """Samples the gateway's and Triton's RSS every ``interval_s`` in a background thread."""

    def __init__(self, *, gateway_port: int, triton_port: int, interval_s: float) -> None:
        self._gateway = psutil.Process(_listener_pid(gateway_port))
        self._triton = psutil.Process(_listener_pid(triton_port))
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._started = time.monotonic()
        self.samples: list[Memory] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> Memory:
        memory = Memory(time.monotonic() - self._started,
                        self._gateway.memory_info().rss / BYTES_PER_MIB,
                        _tree_rss_mib(self._triton))
        self.samples.append(memory)
        return memory

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()


def warm_up(base_url: str, models: list[str], *, users: int) -> None:
    """Every request shape of the Locust file, for each model, from ``users`` concurrent
    clients, ``WARMUP_ROUNDS`` times: the gateway and Triton then hold the buffers, connections
    and per-batch-size allocations the soak itself needs."""
    pngs = fashion_pngs(limit=WARMUP_IMAGES)
    encoded = [base64.b64encode(png).decode() for png in pngs]
    files = [("images", (f"{i}.png", pngs[i], "image/png")) for i in range(WARMUP_MULTIPART_BATCH)]

    async def one_user(client: httpx.AsyncClient) -> None:
        for _ in range(WARMUP_ROUNDS):
            for model in models:
                path = f"/v1/models/{model}/predict"
                for batch in WARMUP_JSON_BATCHES:
                    body = {"inputs": [{"image": image} for image in encoded[:batch]]}
                    (await client.post(path, json=body)).raise_for_status()
                (await client.post(path, files=files, data={"top_k": "3"})).raise_for_status()
            body = {"inputs": [{"image": encoded[0]}]}
            (await client.post("/v1/predict", json=body)).raise_for_status()

    async def all_users() -> None:
        # idle connections dropped before uvicorn closes them (5 s): a request written into one
        # it is closing fails with a ReadError
        limits = httpx.Limits(max_connections=users, keepalive_expiry=KEEPALIVE_EXPIRY_S)
        async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:
            await asyncio.gather(*(one_user(client) for _ in range(users)))

    asyncio.run(all_users())


def run_locust(base_url: str, *, users: int, spawn_rate: float, duration: str,
               models: list[str], out_dir: Path) -> Row:
    """Locust headless; the figures from its aggregated stats row."""
    prefix = out_dir / "soak"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", base_url,
        "--csv", str(prefix), "--stop-timeout", "10",
    ]
    env = {**os.environ, "HETSERVE_LOAD_MODELS": ",".join(models)}
    subprocess.run(command, check=False, cwd=ROOT, env=env,
                   timeout=_seconds(duration) + LOCUST_GRACE_S)
    return next(row for row in read_stats(Path(f"{prefix}_stats.csv")) if row.name == AGGREGATED)


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def _growth(start: float, end: float) -> float:
    return (end - start) / start


def soak(args: argparse.Namespace, *, base_url: str, triton_port: int) -> int:
    """Warm up, run Locust while sampling memory, print the figures; 0 when targets are met."""
    gateway_port = urlsplit(base_url).port or 80
    models = [m.strip() for m in args.models.split(",")]
    warm_up(base_url, models, users=args.users)
    with tempfile.TemporaryDirectory(prefix="hetserve-soak-") as tmp, \
            MemorySampler(gateway_port=gateway_port, triton_port=triton_port,
                          interval_s=SAMPLE_INTERVAL_S) as sampler:
        figures = run_locust(base_url, users=args.users, spawn_rate=args.spawn_rate,
                             duration=args.duration, models=models, out_dir=Path(tmp))
    start, end = sampler.samples[0], sampler.samples[-1]
    middle = sampler.samples[len(sampler.samples) // 2]

    print(f"soak: {args.users} users for {args.duration} against {base_url}")
    print(f"  requests {figures.requests}, failures {figures.failures}, "
          f"{figures.requests_per_s:.1f} requests/s")
    print(f"  latency p50 {figures.p50_ms:.0f} ms, p95 {figures.p95_ms:.0f} ms, "
          f"p99 {figures.p99_ms:.0f} ms")
    growth, memory = {}, {}
    for name, field in (("gateway", "gateway_mib"), ("triton", "triton_mib")):
        first, mid, last = (getattr(m, field) for m in (start, middle, end))
        peak = max(getattr(m, field) for m in sampler.samples)
        growth[name] = _growth(first, last)
        memory[name] = {"start_mib": first, "middle_mib": mid, "end_mib": last,
                        "peak_mib": peak, "growth_percent": 100 * growth[name]}
        print(f"  {name} RSS start {first:.1f} MiB, middle ({middle.elapsed_s:.0f} s) "
              f"{mid:.1f} MiB, end ({end.elapsed_s:.0f} s) {last:.1f} MiB, peak {peak:.1f} MiB "
              f"({growth[name]:+.1%} start to end)")
    series = ", ".join(f"{m.elapsed_s:.0f}s {m.gateway_mib:.0f}/{m.triton_mib:.0f}"
                       for m in sampler.samples)
    print(f"  RSS samples (gateway/triton MiB): {series}")
    passed = figures.failures == 0 and all(g < MAX_MEMORY_GROWTH for g in growth.values())
    print(f"  targets (0 failures, memory growth < {MAX_MEMORY_GROWTH:.0%}): "
          f"{'met' if passed else 'NOT met'}")
    write_result({
        "benchmark": "soak: Locust against the gateway, resident memory sampled through it",
        "users": args.users, "duration": args.duration, "models": models,
        "locust": figures._asdict(), "memory": memory,
        "rss_samples": [m._asdict() for m in sampler.samples], "targets_met": passed,
    }, "soak", measures=MEASURES)
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=Path, metavar="REPO",
                        help="start hetgateway serve on this model repository (free ports)")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--triton-port", type=int, default=8001, help="Triton's gRPC port")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10.0)
    parser.add_argument("--duration", default="5m", help="Locust's -t, e.g. 300s or 5m")
    parser.add_argument("--models", default="fashion_het,fashion_det")
    args = parser.parse_args()
    if args.serve is None:
        return soak(args, base_url=loopback_url(args.url), triton_port=args.triton_port)
    with tempfile.TemporaryDirectory(prefix="hetserve-soak-serve-") as tmp, \
            served_stack(args.serve, log_path=Path(tmp) / "serve.log") as stack:
        print(f"started hetgateway serve (pid {stack.process.pid}) at {stack.url}")
        return soak(args, base_url=stack.url, triton_port=stack.triton_grpc_port)


if __name__ == "__main__":
    sys.exit(main())
