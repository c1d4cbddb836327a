"""Soak benchmark: a bounded Locust run against a running gateway, with memory before and after.

Typical usage (``make serve`` running in another shell)::

    .venv/bin/python bench/soak.py                          # 5 min, 50 users
    .venv/bin/python bench/soak.py --users 20 --duration 60s --url http://127.0.0.1:8080

Runs ``tests/load/locustfile.py`` headless for ``--duration`` with ``--users`` users, then prints
requests/s, p50/p95/p99, failures, and the resident memory (RSS) of the gateway process (the
one listening on the gateway's port) and of Triton (the process listening on ``--triton-port``
plus its children, the Python-backend stubs), sampled after a short warm-up and at the end.
Targets: 0 failures and memory growth under 10 %. Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import base64
import csv
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import psutil
from loopback_target import fashion_pngs, loopback_url

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"
WARMUP_REQUESTS = 50
MAX_MEMORY_GROWTH = 0.10
BYTES_PER_MIB = 1024 * 1024
LOCUST_GRACE_S = 60


class Memory(NamedTuple):
    """Resident memory in MiB."""

    gateway_mib: float
    triton_mib: float


class LoadFigures(NamedTuple):
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def _listener_pid(port: int) -> int:
    """The process listening on ``port`` on this machine."""
    for connection in psutil.net_connections(kind="tcp"):
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if listening and connection.pid is not None:
            return connection.pid
    raise RuntimeError(f"no process listens on port {port}: is the server running?")


def _tree_rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    members = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in members if p.is_running()) / BYTES_PER_MIB


def sample_memory(*, gateway_port: int, triton_port: int) -> Memory:
    """RSS of the gateway process alone and of Triton with its stub processes."""
    gateway = psutil.Process(_listener_pid(gateway_port))
    return Memory(gateway.memory_info().rss / BYTES_PER_MIB,
                  _tree_rss_mib(_listener_pid(triton_port)))


def warm_up(base_url: str, model: str) -> None:
    """A few predictions so that first-use allocations do not count as growth."""
    pngs = fashion_pngs(limit=8)
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for index in range(WARMUP_REQUESTS):
            body = {"inputs": [{"image": base64.b64encode(pngs[index % len(pngs)]).decode()}]}
            client.post(f"/v1/models/{model}/predict", json=body).raise_for_status()


def run_locust(base_url: str, *, users: int, spawn_rate: float, duration: str,
               out_dir: Path) -> LoadFigures:
    """Locust headless; the figures from its aggregated stats row."""
    prefix = out_dir / "soak"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", base_url,
        "--csv", str(prefix), "--stop-timeout", "10",
    ]
    subprocess.run(command, check=False, cwd=ROOT, timeout=_seconds(duration) + LOCUST_GRACE_S)
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as stream:
        total = next(row for row in csv.DictReader(stream) if row["Name"] == "Aggregated")
    return LoadFigures(
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        requests_per_s=float(total["Requests/s"]),
        p50_ms=float(total["50%"]),
        p95_ms=float(total["95%"]),
        p99_ms=float(total["99%"]),
    )


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def _growth(start: float, end: float) -> float:
    return (end - start) / start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--triton-port", type=int, default=8001)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10.0)
    parser.add_argument("--duration", default="5m", help="Locust's -t, e.g. 300s or 5m")
    parser.add_argument("--model", default="fashion_het", help="model used for the warm-up")
    args = parser.parse_args()
    base_url = loopback_url(args.url)
    gateway_port = urlsplit(base_url).port or 80

    warm_up(base_url, args.model)
    before = sample_memory(gateway_port=gateway_port, triton_port=args.triton_port)
    with tempfile.TemporaryDirectory(prefix="hetserve-soak-") as tmp:
        figures = run_locust(base_url, users=args.users, spawn_rate=args.spawn_rate,
                             duration=args.duration, out_dir=Path(tmp))
    after = sample_memory(gateway_port=gateway_port, triton_port=args.triton_port)

    print(f"soak: {args.users} users for {args.duration} against {base_url}")
    print(f"  requests {figures.requests}, failures {figures.failures}, "
          f"{figures.requests_per_s:.1f} requests/s")
    print(f"  latency p50 {figures.p50_ms:.0f} ms, p95 {figures.p95_ms:.0f} ms, "
          f"p99 {figures.p99_ms:.0f} ms")
    growth = {}
    for name, start, end in (("gateway", before.gateway_mib, after.gateway_mib),
                             ("triton", before.triton_mib, after.triton_mib)):
        growth[name] = _growth(start, end)
        print(f"  {name} RSS {start:.1f} MiB -> {end:.1f} MiB ({growth[name]:+.1%})")
    passed = figures.failures == 0 and all(g < MAX_MEMORY_GROWTH for g in growth.values())
    print(f"  targets (0 failures, memory growth < {MAX_MEMORY_GROWTH:.0%}): "
          f"{'met' if passed else 'NOT met'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
