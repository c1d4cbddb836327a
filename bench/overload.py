"""Overload benchmark: under 2-4x the sustainable rate, admitted requests keep their latency and
the rest are refused fast with 429.

Typical usage::

    .venv/bin/python bench/overload.py --serve model_repo            # starts hetgateway serve
    .venv/bin/python bench/overload.py --serve model_repo --server-cpus 0 --generator-cpus 1
    .venv/bin/python bench/overload.py --url http://127.0.0.1:8080   # a running gateway whose
                                                # HETSERVE_MAX_IN_FLIGHT equals --concurrency

1. Sustainable rate: ``--concurrency`` closed-loop connections for ``--probe-s`` seconds; X is
   the rate of 200 answers, and their latency is the baseline. With ``--serve`` the gateway is
   started with ``HETSERVE_MAX_IN_FLIGHT`` = ``--concurrency``, so that what it admits is what
   it can serve at that latency.
2. Open loop at each factor f of ``--factors`` (default 1, 2, 4): one request every
   1 / (f X) seconds for ``--phase-s`` seconds, whatever the answers (clients do not wait for
   each other). Latency is measured from each request's *scheduled* send time, so a generator
   or a server that falls behind shows as latency and cannot hide it (no coordinated omission).

Per phase it prints the offered rate, the admitted (200) rate, admitted and refused (429)
p50/p99, and errors (other statuses, transport failures, timeouts, and requests the generator
could not send because ``--max-connections`` were all busy), and the generator's own CPU use
and worst lateness against its schedule.

The generator is meant to cost as little CPU as possible: raw asyncio streams (uvloop) over
keep-alive HTTP/1.1 connections, the request bytes built once, only the status line and
Content-Length parsed. Each phase is bounded by its duration, its request count (rate x
duration) and a per-request timeout. Loopback targets only.

Every request is ``--batch`` Fashion-MNIST test images (default 8) as base64 PNG JSON to the
model's predict route. The figures go to ``bench/results/overload-<machine>.json`` with their
provenance.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop
from loopback_target import (
    SERVED_STACK_CODE,
    Percentiles,
    fashion_pngs,
    loopback_url,
    percentiles_ms,
    served_stack,
)
from provenance import write_result

NUM_IMAGES = 64
MEASURES = [*SERVED_STACK_CODE, "bench/overload.py"]
TOP_K = 3
REQUEST_TIMEOUT_S = 30.0
DEFAULT_FACTORS = (1.0, 2.0, 4.0)
WARMUP_S = 5.0
STATUS_OK = 200
STATUS_REFUSED = 429
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"content-length:"
CONNECTION_CLOSE = b"connection: close"
KEEPALIVE_IDLE_S = 4.0
"""Idle connections older than this are closed, not reused: uvicorn closes keep-alive
connections idle for 5 s, and a request written into one it is closing would fail."""


@dataclass
class Outcomes:
    """Answers collected in one phase: latency per status code and failures by kind."""

    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    worst_lateness_s: float = 0.0

    def add(self, status: int, latency_s: float) -> None:
        self.latencies_s.setdefault(status, []).append(latency_s)

    def count(self, status: int) -> int:
        return len(self.latencies_s.get(status, []))

    def percentiles(self, status: int) -> Percentiles:
        return percentiles_ms(self.latencies_s.get(status, []))

    def error_summary(self) -> dict[str, int]:
        others = {f"status {s}": len(v) for s, v in self.latencies_s.items()
                  if s not in (STATUS_OK, STATUS_REFUSED)}
        return {**others, **self.errors}


class Connections:
    """Keep-alive HTTP/1.1 connections to one host, at most ``limit`` open at once."""

    def __init__(self, host: str, port: int, *, limit: int) -> None:
        self._host, self._port, self._limit = host, port, limit
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.open = 0

    async def exchange(self, request: bytes) -> int:
        """Send ``request`` and read the whole answer; returns its status code. Raises
        ``ConnectionRefusedError`` when all ``limit`` connections are busy, ``OSError`` or
        ``asyncio.IncompleteReadError`` on transport failures."""
        reader, writer = await self._acquire()
        try:
            writer.write(request)
            head = await reader.readuntil(HEADER_END)
            status = int(head[9:12])
            lowered = head.lower()
            start = lowered.find(CONTENT_LENGTH)
            length = int(lowered[start + len(CONTENT_LENGTH):lowered.find(b"\r\n", start)])
            await reader.readexactly(length)
        except BaseException:
            self._discard(writer)
            raise
        if CONNECTION_CLOSE in lowered:
            self._discard(writer)
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status

    async def _acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < KEEPALIVE_IDLE_S:
                return reader, writer
            self._discard(writer)
        if self.open >= self._limit:
            raise ConnectionRefusedError("generator connection limit")
        self.open += 1
        try:
            return await asyncio.open_connection(self._host, self._port)
        except BaseException:
            self.open -= 1
            raise

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self.open -= 1
        writer.close()

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


def request_bytes(host: str, port: int, path: str, *, batch: int) -> list[bytes]:
    """Whole HTTP/1.1 requests of ``batch`` base64 PNG images each, cycling through the
    first ``NUM_IMAGES`` test images."""
    encoded = [base64.b64encode(png).decode() for png in fashion_pngs(limit=NUM_IMAGES)]
    requests = []
    for start in range(0, len(encoded), batch):
        images = [{"image": encoded[(start + i) % len(encoded)]} for i in range(batch)]
        body = json.dumps({"inputs": images, "top_k": TOP_K}).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        requests.append(head.encode() + body)
    return requests


async def _timed(connections: Connections, request: bytes, scheduled: float,
                 outcomes: Outcomes) -> None:
    try:
        status = await asyncio.wait_for(connections.exchange(request), REQUEST_TIMEOUT_S)
    except ConnectionRefusedError:
        outcomes.errors["generator connection limit"] += 1
        return
    except TimeoutError:
        outcomes.errors["timeout"] += 1
        return
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        outcomes.errors[type(error).__name__] += 1
        return
    outcomes.add(status, time.perf_counter() - scheduled)


async def closed_loop(connections: Connections, requests: list[bytes], *, concurrency: int,
                      duration_s: float) -> tuple[float, Outcomes]:
    """``concurrency`` workers, each sending the next request when answered; returns the rate
    of 200 answers (requests/s) and the outcomes."""
    outcomes = Outcomes()
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            await _timed(connections, requests[index % len(requests)], time.perf_counter(),
                         outcomes)
            index += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return outcomes.count(STATUS_OK) / (time.perf_counter() - started), outcomes


async def open_loop(connections: Connections, requests: list[bytes], *, rate: float,
                    duration_s: float) -> Outcomes:
    """One request every ``1 / rate`` s for ``duration_s`` (``rate * duration_s`` requests),
    whatever the answers; latency from each request's scheduled time."""
    outcomes = Outcomes()
    tasks = []
    started = time.perf_counter()
    for index in range(int(rate * duration_s)):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        outcomes.worst_lateness_s = max(outcomes.worst_lateness_s,
                                        time.perf_counter() - scheduled)
        tasks.append(asyncio.create_task(
            _timed(connections, requests[index % len(requests)], scheduled, outcomes)))
    await asyncio.gather(*tasks)
    return outcomes


def _ms(percentiles: Percentiles) -> str:
    return f"p50 {percentiles.p50:7.1f} ms  p99 {percentiles.p99:7.1f} ms"


def _report(title: str, outcomes: Outcomes, *, duration_s: float, cpu_s: float) -> dict:
    """Print one phase's figures; returns them for the results file."""
    print(title)
    print(f"  admitted (200) {outcomes.count(STATUS_OK):6d}  "
          f"{outcomes.count(STATUS_OK) / duration_s:7.1f}/s  {_ms(outcomes.percentiles(200))}")
    print(f"  refused  (429) {outcomes.count(STATUS_REFUSED):6d}  "
          f"{outcomes.count(STATUS_REFUSED) / duration_s:7.1f}/s  {_ms(outcomes.percentiles(429))}")
    print(f"  errors: {outcomes.error_summary() or 'none'}")
    print(f"  generator: CPU {cpu_s / duration_s:.0%} of one core, worst lateness "
          f"{outcomes.worst_lateness_s * 1000:.1f} ms")
    return {
        status_name: {"count": outcomes.count(status),
                      "per_s": outcomes.count(status) / duration_s,
                      "p50_ms": outcomes.percentiles(status).p50,
                      "p99_ms": outcomes.percentiles(status).p99}
        for status_name, status in (("admitted", STATUS_OK), ("refused", STATUS_REFUSED))
    } | {"errors": outcomes.error_summary(), "generator_cpu_fraction": cpu_s / duration_s,
         "generator_worst_lateness_ms": outcomes.worst_lateness_s * 1000}


async def run(args: argparse.Namespace, base_url: str) -> dict:
    """The probe, then one open-loop phase per factor; returns every phase's figures."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"/v1/models/{args.model}/predict"
    requests = request_bytes(host, port, path, batch=args.batch)
    connections = Connections(host, port, limit=args.max_connections)
    try:
        await closed_loop(connections, requests, concurrency=args.concurrency,
                          duration_s=WARMUP_S)
        cpu = time.process_time()
        rate, baseline = await closed_loop(connections, requests, concurrency=args.concurrency,
                                           duration_s=args.probe_s)
        figures: dict = {"sustainable_rate_per_s": rate, "concurrency": args.concurrency,
                         "batch": args.batch, "model": args.model, "probe_s": args.probe_s,
                         "phase_s": args.phase_s, "phases": []}
        figures["probe"] = _report(
                f"sustainable rate: closed loop, {args.concurrency} connections, "
                f"{args.probe_s:g} s, {args.batch} images per request: {rate:.1f} requests/s",
                baseline, duration_s=args.probe_s, cpu_s=time.process_time() - cpu)
        for factor in args.factors:
            offered = factor * rate
            cpu, wall = time.process_time(), time.perf_counter()
            outcomes = await open_loop(connections, requests, rate=offered,
                                       duration_s=args.phase_s)
            wall = time.perf_counter() - wall
            phase = _report(f"\n{factor:g}x: open loop, offered {offered:.1f} requests/s for "
                    f"{args.phase_s:g} s ({int(offered * args.phase_s)} requests; last answer "
                    f"after {wall:.1f} s)",
                    outcomes, duration_s=args.phase_s, cpu_s=time.process_time() - cpu)
            figures["phases"].append({"factor": factor, "offered_per_s": offered,
                                      "last_answer_s": wall, **phase})
    finally:
        connections.close()
    return figures


def _cpus(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=Path, metavar="REPO",
                        help="start hetgateway serve on this model repository (free ports)")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="closed-loop connections of the probe = the gateway's max in flight")
    parser.add_argument("--batch", type=int, default=8, help="images per request")
    parser.add_argument("--probe-s", type=float, default=15.0)
    parser.add_argument("--phase-s", type=float, default=15.0)
    parser.add_argument("--factors", type=lambda text: [float(f) for f in text.split(",")],
                        default=list(DEFAULT_FACTORS))
    parser.add_argument("--max-connections", type=int, default=1024,
                        help="most connections the generator opens")
    parser.add_argument("--generator-cpus", type=_cpus, help="pin this script, e.g. 1")
    parser.add_argument("--server-cpus", type=_cpus, help="pin the served stack, e.g. 0")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for hetgateway serve (repeatable)")
    args = parser.parse_args()
    if args.generator_cpus:
        os.sched_setaffinity(0, args.generator_cpus)
    if args.serve is None:
        write_result(uvloop.run(run(args, loopback_url(args.url))), "overload", measures=MEASURES)
        return 0
    env = {"HETSERVE_MAX_IN_FLIGHT": str(args.concurrency)}
    with tempfile.TemporaryDirectory(prefix="hetserve-overload-") as tmp, \
            served_stack(args.serve, log_path=Path(tmp) / "serve.log", env=env,
                         extra_args=args.server_arg, cpus=args.server_cpus) as stack:
        print(f"hetgateway serve at {stack.url}, max in flight {args.concurrency}, CPUs "
              f"server {sorted(args.server_cpus or os.sched_getaffinity(stack.process.pid))}, "
              f"generator {sorted(os.sched_getaffinity(0))}")
        figures = uvloop.run(run(args, stack.url))
    write_result(figures, "overload", measures=MEASURES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
