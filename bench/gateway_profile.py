"""Where the gateway's CPU goes: a py-spy profile of one gateway under load, folded into the
layers of the stack it runs on.

Starts the embedded Triton on free loopback ports and one coalescing gateway in front of it
(one worker, as ``bench/gateway_bench.py`` starts it), sends ``--concurrency`` clients'
requests of ``--images`` Fashion-MNIST PNGs (JSON or multipart: issue 21's CPU target is
1-image requests at 8 clients), and while the load runs records the gateway process with
py-spy (sampling from outside the process: the gateway is the one ``make serve`` runs, not an
instrumented copy). The gateway's CPU per request is read from ``/proc`` over the same window,
so each share below can be read as milliseconds per request (``share * cpu_ms_per_request``).

Every busy sample (py-spy leaves out the samples where a thread waits) is folded two ways:

* **by layer, self**: the package of the sample's innermost Python frame (``LAYERS``): the
  HTTP server (uvicorn), the event loop (asyncio and the loop's C core), the web framework
  (FastAPI, Starlette), the gRPC client (grpc, tritonclient), image decoding (Pillow), JSON
  and validation (pydantic), metrics (prometheus_client), the gateway's own code, the rest of
  the standard library. py-spy sees Python frames only: time inside a C extension counts for
  the innermost Python frame above it (numpy's work for the gateway function that called it;
  grpc's C core for grpc's own Cython-driven frames).
* **by stage, inclusive**: the share of samples whose stack passes through each of the
  gateway's stages (``STAGES``: parsing the body, preprocessing, shaping the answer, the
  Triton call, sending the answer). The stages overlap with the layers, not with each other.

Nothing here is a target: it is the measurement behind "cut whatever the profile shows" (issue
21): which layers a thinner hot path would have to remove to reach the 0.5 ms target. Read
``framework_share`` (server, loop, framework and gRPC client together) against it: even a
free request path leaves ``cpu_ms_outside_framework``, ``1 - framework_share`` of today's CPU
per request.

Reproduce: ``make bench-gateway-profile`` (``.venv/bin/python bench/gateway_profile.py``);
options ``--seconds 12 --rate 250 --concurrency 8 --images 1 --payload json``. The result goes
to ``bench/results/gateway-profile-<machine>.json`` with its provenance. py-spy reads another
process's memory: run as root or where ``ptrace`` is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiohttp
from gateway_bench import (
    Point,
    Workload,
    gateway_sender,
    process_tree_cpu_s,
    start_gateway,
    stop_gateway,
)
from loopback_target import embedded_triton, load_for
from provenance import write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
WARMUP_S = 3.0
SPY_START_S = 1.0
"""How long py-spy takes to attach before the load it measures starts."""
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("http_server", ("uvicorn/", "granian/", "httptools/", "h11/")),
    ("event_loop", ("asyncio/", "uvloop/", "selectors.py")),
    ("web_framework", ("fastapi/", "starlette/", "anyio/")),
    ("grpc_client", ("grpc/", "tritonclient/", "google/protobuf/")),
    ("image_decoding", ("PIL/",)),
    ("json_and_validation", ("pydantic/", "pydantic_core/", "json/")),
    ("metrics", ("prometheus_client/",)),
    ("gateway_code", ("hetgateway/", "hetcontract/", "numpy/")),
)
"""A frame's layer: the first whose path prefix its file has; else ``standard_library``."""
OTHER_LAYER = "standard_library"
FRAMEWORK_LAYERS = ("http_server", "event_loop", "web_framework", "grpc_client")
"""What the request path runs on rather than what the gateway does (module doc)."""
STAGES: dict[str, tuple[str, ...]] = {
    "parse_body": ("read_predict_request (hetgateway/request_parsing.py)",),
    "preprocess": ("DataPlane._preprocess (hetgateway/data_plane.py)",),
    "triton_call": ("Coalescer.infer (hetgateway/coalescing.py)",
                    "Coalescer._call (hetgateway/coalescing.py)",
                    "UnaryUnaryCall._invoke (grpc/aio/_call.py)"),
    "shape_answer": ("result_layouts (hetgateway/answer.py)",
                     "answer_json (hetgateway/answer.py)",
                     "GatewayMetrics.observe_uncertainty (hetgateway/metrics.py)"),
    "send_answer": ("Response.__call__ (starlette/responses.py)",),
}
"""A stage: the functions (``name (file)`` as py-spy prints them, line numbers dropped) whose
samples, callees included, count for it."""
FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def main() -> int:
    args = parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (requirements-dev.txt)")
    repository = Path(args.model_repository)
    workload = Workload.of_model(repository, args.model)
    point = Point(args.payload, args.images, args.concurrency)
    with (tempfile.TemporaryDirectory(prefix="hetserve-profile-") as tmp,
          embedded_triton(repository, Path(tmp)) as triton):
        process, url = start_gateway(triton.grpc_url, coalesce=True)
        try:
            measured = asyncio.run(profile(args, spy, workload, point, url, process.pid,
                                           Path(tmp) / "profile.txt"))
        finally:
            stop_gateway(process)
    report = {"model": args.model, "payload": args.payload, "images": args.images,
              "concurrency": args.concurrency, "seconds": args.seconds, "rate_hz": args.rate,
              **measured}
    print_report(report)
    write_result(report, "gateway-profile", measures=[f"model_repo/{args.model}"])
    return 0


async def profile(args: argparse.Namespace, spy: str, workload: Workload, point: Point,
                  url: str, pid: int, output: Path) -> dict:
    """Warm up, then load the gateway for ``args.seconds`` while py-spy records it; the
    throughput, the gateway's CPU per request and the folded profile."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        send = gateway_sender(http, url, args.model, workload, point)
        await load_for(send, WARMUP_S, point.concurrency)
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration",
             str(round(args.seconds + SPY_START_S)), "--format", "raw", "--output", str(output),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(SPY_START_S)
        before = process_tree_cpu_s(pid)
        wall, latencies = await load_for(send, args.seconds, point.concurrency)
        cpu_s = process_tree_cpu_s(pid) - before
        _, error = await asyncio.to_thread(recorder.communicate)
    if recorder.returncode != 0 or not output.exists():
        raise SystemExit(f"py-spy failed ({recorder.returncode}): {error.decode()[-500:]}")
    folded = fold_profile(output.read_text().splitlines())
    cpu_ms = 1000 * cpu_s / len(latencies)
    return {"requests": len(latencies), "throughput_rps": len(latencies) / wall,
            "cpu_ms_per_request": cpu_ms,
            "cpu_ms_outside_framework": cpu_ms * (1 - folded["framework_share"]), **folded}


def fold_profile(lines: Iterable[str]) -> dict:
    """py-spy's raw lines (``frame;frame;...;innermost COUNT``, each frame ``name (file:line)``)
    folded into the shares of busy samples by layer (self), by stage (inclusive) and the
    innermost functions that take the most (module doc)."""
    layers: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        samples = int(count)
        total += samples
        layers[layer_of(frames[-1])] += samples
        innermost[frames[-1]] += samples
        on_stack = set(frames)
        for stage, functions in STAGES.items():
            if on_stack.intersection(functions):
                stages[stage] += samples
    if total == 0:
        raise ValueError("the profile holds no samples")
    layer_shares = {name: layers[name] / total for name, _ in LAYERS} | {
        OTHER_LAYER: layers[OTHER_LAYER] / total}
    return {
        "samples": total,
        "layers": layer_shares,
        "framework_share": sum(layer_shares[name] for name in FRAMEWORK_LAYERS),
        "stages": {name: stages[name] / total for name in STAGES},
        "top_functions": [{"function": name, "share": count / total}
                          for name, count in innermost.most_common(15)],
    }


def layer_of(function: str) -> str:
    """The layer of a frame ``name (file)`` (``LAYERS``; ``OTHER_LAYER`` when none fits)."""
    match = FRAME.match(function)
    file = match.group("file") if match else function
    for name, prefixes in LAYERS:
        if any(file.startswith(prefix) or f"/{prefix}" in file for prefix in prefixes):
            return name
    return OTHER_LAYER


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: one entry per function, not per line."""
    match = FRAME.match(frame)
    return f"{match.group('name')} ({match.group('file')})" if match else frame


def print_report(report: Mapping) -> None:
    print(f"{report['requests']} requests, {report['throughput_rps']:.0f} req/s, gateway CPU "
          f"{report['cpu_ms_per_request']:.3f} ms per request, {report['samples']} samples")
    cpu = report["cpu_ms_per_request"]
    print("by layer (self):")
    for name, share in sorted(report["layers"].items(), key=lambda item: -item[1]):
        print(f"  {name:22s} {100 * share:5.1f} %  ~{share * cpu:.3f} ms")
    print(f"  framework layers together {100 * report['framework_share']:.1f} %; the rest "
          f"~{report['cpu_ms_outside_framework']:.3f} ms per request")
    print("by stage (inclusive):")
    for name, share in report["stages"].items():
        print(f"  {name:22s} {100 * share:5.1f} %  ~{share * cpu:.3f} ms")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--payload", choices=("json", "multipart"), default="json")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=12.0, help="profiled load")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
