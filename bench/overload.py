"""Overload benchmark: under 2-4x the sustainable rate, admitted requests keep their latency and
the rest are refused fast with 429.

Typical usage (a gateway already running on loopback, e.g. ``make serve`` with
``HETSERVE_MAX_IN_FLIGHT=8``)::

    .venv/bin/python bench/overload.py --url http://127.0.0.1:8080 --concurrency 8 \
        --probe-s 15 --duration-s 15 --factors 2,4

1. Probe: ``--concurrency`` closed-loop workers for ``--probe-s`` measure the sustainable rate
   X (requests/s) and the baseline latency. Set the gateway's ``HETSERVE_MAX_IN_FLIGHT`` to the
   same concurrency, so that what it admits is what it can serve at that latency.
2. Overload: for each factor f, an open-loop generator sends f * X requests/s for
   ``--duration-s`` (arrivals do not wait for answers, as real clients do not), and the answers
   are split into admitted (200), refused (429) and anything else (which should be none).

Every request is ``--batch`` Fashion-MNIST test images (default 8) as base64 PNG JSON to the
model's predict route; batches keep the request rate low enough that one Python load generator
sharing a small machine with the server is not itself the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from loopback_target import Percentiles, fashion_pngs, loopback_url, percentiles_ms

NUM_IMAGES = 64
REQUEST_TIMEOUT_S = 30.0
TOP_K = 3


@dataclass
class Outcomes:
    """Answers collected in one phase: latency per status code, and transport failures."""

    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    transport_errors: Counter = field(default_factory=Counter)

    def add(self, status: int, latency_s: float) -> None:
        self.latencies_s.setdefault(status, []).append(latency_s)

    def count(self, status: int) -> int:
        return len(self.latencies_s.get(status, []))

    def percentiles(self, status: int) -> Percentiles:
        return percentiles_ms(self.latencies_s.get(status, []))


def _bodies(batch: int) -> list[dict]:
    """Request bodies of ``batch`` images each, cycling through the test images."""
    encoded = [base64.b64encode(png).decode() for png in fashion_pngs(limit=NUM_IMAGES)]
    return [
        {"inputs": [{"image": encoded[(start + i) % len(encoded)]} for i in range(batch)],
         "top_k": TOP_K}
        for start in range(0, len(encoded), batch)
    ]


async def _send(client: httpx.AsyncClient, path: str, body: dict, outcomes: Outcomes) -> None:
    started = time.perf_counter()
    try:
        answer = await client.post(path, json=body)
    except httpx.HTTPError as error:
        outcomes.transport_errors[type(error).__name__] += 1
        return
    outcomes.add(answer.status_code, time.perf_counter() - started)


async def probe(client: httpx.AsyncClient, path: str, bodies: list[dict], *,
                concurrency: int, duration_s: float) -> tuple[float, Outcomes]:
    """Closed loop: ``concurrency`` workers, each sending the next request when answered.
    Returns the achieved rate of 200 answers (requests/s) and the outcomes."""
    outcomes = Outcomes()
    cycle = itertools.cycle(bodies)
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await _send(client, path, next(cycle), outcomes)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes.count(200) / (time.perf_counter() - started), outcomes


async def open_loop(client: httpx.AsyncClient, path: str, bodies: list[dict], *,
                    rate: float, duration_s: float) -> tuple[Outcomes, float]:
    """Open loop: one request every ``1 / rate`` s for ``duration_s``, whatever the answers.
    Returns the outcomes and the seconds until the last answer."""
    outcomes = Outcomes()
    tasks = []
    started = time.perf_counter()
    for index, body in zip(range(int(rate * duration_s)), itertools.cycle(bodies)):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(client, path, body, outcomes)))
    await asyncio.gather(*tasks)
    return outcomes, time.perf_counter() - started


def _row(name: str, outcomes: Outcomes, status: int) -> str:
    p = outcomes.percentiles(status)
    return (f"  {name:<9} {outcomes.count(status):>6}   p50 {p.p50:8.1f} ms   p95 {p.p95:8.1f} ms"
            f"   p99 {p.p99:8.1f} ms")


def _report(title: str, outcomes: Outcomes) -> None:
    print(title)
    print(_row("200", outcomes, 200))
    print(_row("429", outcomes, 429))
    others = {s: len(v) for s, v in outcomes.latencies_s.items() if s not in (200, 429)}
    print(f"  other statuses: {others or 'none'}; transport errors: "
          f"{dict(outcomes.transport_errors) or 'none'}")


async def run(args: argparse.Namespace) -> None:
    base_url = loopback_url(args.url)
    path = f"/v1/models/{args.model}/predict"
    bodies = _bodies(args.batch)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=args.concurrency * 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S,
                                 limits=limits) as client:
        await probe(client, path, bodies, concurrency=args.concurrency, duration_s=2.0)  # warm
        rate, baseline = await probe(client, path, bodies, concurrency=args.concurrency,
                                     duration_s=args.probe_s)
        print(f"sustainable rate at concurrency {args.concurrency}: {rate:.1f} requests/s")
        _report("baseline (closed loop)", baseline)
        base_p99 = baseline.percentiles(200).p99
        for factor in args.factors:
            offered = factor * rate
            outcomes, elapsed_s = await open_loop(client, path, bodies, rate=offered,
                                                  duration_s=args.duration_s)
            _report(f"\n{factor:g}x overload: offered {offered:.1f} requests/s for "
                    f"{args.duration_s:g} s", outcomes)
            admitted = outcomes.percentiles(200)
            print(f"  admitted p99 / baseline p99 = {admitted.p99 / base_p99:.2f}; "
                  f"served {outcomes.count(200) / elapsed_s:.1f} requests/s "
                  f"(last answer after {elapsed_s:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="images per request")
    parser.add_argument("--probe-s", type=float, default=15.0)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--factors", type=lambda text: [float(f) for f in text.split(",")],
                        default=[2.0, 4.0])
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
