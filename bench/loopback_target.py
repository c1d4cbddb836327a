"""Shared by the benchmarks: the loopback-only target, Fashion-MNIST images as PNG, latency
percentiles, the embedded Triton and ``hetgateway serve`` started on free loopback ports, and
the CPU time of processes.

Typical usage::

    url = loopback_url("http://127.0.0.1:8080")    # ValueError for any other host
    pngs = fashion_pngs(limit=64)
    print(percentiles_ms([0.010, 0.012, 0.031]))     # Percentiles(p50=12.0, p95=..., p99=...)
    with served_stack(Path("model_repo"), log_path=Path("/tmp/serve.log")) as stack:
        ...                                          # stack.url, stack.triton_grpc_port
    with embedded_triton(Path("model_repo"), Path(tmp)) as triton:
        ...                                          # triton.grpc_url, triton.pid
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
from hetcontract import ModelCard
from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository
from hetgateway.preprocessing import normalise
from PIL import Image

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_HEADER = ">4i"  # magic, count, rows, cols
MS_PER_S = 1000.0
TRITON_READY_TIMEOUT_S = 240.0
SERVED_STACK_CODE = ("server/src/hetgateway", "model_repo")
"""The code a load test against ``hetgateway serve`` measures (its results' provenance)."""


class Percentiles(NamedTuple):
    """Latency percentiles in milliseconds."""

    p50: float
    p95: float
    p99: float


def loopback_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError unless its host is loopback."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"benchmarks only run against loopback, not {host!r}")
    return url.rstrip("/")


def fashion_images(*, limit: int, directory: Path = FASHION_MNIST_DIR) -> np.ndarray:
    """The first ``limit`` Fashion-MNIST test images, uint8 [N, 28, 28]."""
    with gzip.open(directory / TEST_IMAGES, "rb") as stream:
        _, count, rows, cols = struct.unpack(IDX_HEADER, stream.read(16))
        raw = stream.read(rows * cols * min(count, limit))
    return np.frombuffer(raw, np.uint8).reshape(-1, rows, cols)


def png(image: np.ndarray) -> bytes:
    """One uint8 [H, W] image, PNG-encoded."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def fashion_pngs(*, limit: int, directory: Path = FASHION_MNIST_DIR) -> list[bytes]:
    """The first ``limit`` Fashion-MNIST test images, PNG-encoded."""
    return [png(image) for image in fashion_images(limit=limit, directory=directory)]


def percentiles_ms(latencies_s: list[float]) -> Percentiles:
    """p50/p95/p99 of latencies given in seconds, in milliseconds (NaN when empty)."""
    if not latencies_s:
        return Percentiles(float("nan"), float("nan"), float("nan"))
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * MS_PER_S, [50, 95, 99])
    return Percentiles(float(p50), float(p95), float(p99))


SERVE_READY_TIMEOUT_S = 240.0
SERVE_STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2


class ServedStack(NamedTuple):
    """A ``hetgateway serve`` started by a benchmark: its gateway URL and Triton's ports."""

    url: str
    triton_grpc_port: int
    process: subprocess.Popen


async def load(send: Callable[[int], Awaitable[None]], requests: int, concurrency: int
               ) -> tuple[float, list[float]]:
    """``requests`` calls of ``send(i)`` by ``concurrency`` clients; wall time and every
    call's latency."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client() -> None:
        for i in counter:
            started = time.perf_counter()
            await send(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def load_for(send: Callable[[int], Awaitable[None]], seconds: float, concurrency: int
                   ) -> tuple[float, list[float]]:
    """``concurrency`` clients calling ``send(i)`` back to back for ``seconds``; wall time and
    every call's latency."""
    latencies: list[float] = []
    counter = itertools.count()
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await send(next(counter))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def preprocess(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, C, H, W] = (pixel / scale - mean) / std, per the model
    card: the gateway's own ``normalise``, over the whole batch at once."""
    pixels = np.repeat(images[:, None].astype(np.float32), card.input.shape[0], axis=1)
    return normalise(pixels, card.input)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def served_stack(repository: Path, *, log_path: Path, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None,
                 cpus: set[int] | None = None) -> Iterator[ServedStack]:
    """``hetgateway serve --model-repository repository`` on free loopback ports, ready
    (``/readyz`` 200) when entered, stopped (SIGTERM, then SIGKILL) when left. ``cpus`` pins
    it (and Triton, which it starts later and which inherits the affinity) to those CPUs."""
    gateway_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "hetgateway.cli", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--port", str(gateway_port),
        "--triton-http-port", str(free_port()), "--triton-grpc-port", str(grpc_port),
        "--triton-metrics-port", str(free_port()), "--log-level", "warning", *extra_args,
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
        if cpus:
            os.sched_setaffinity(process.pid, cpus)
        stack = ServedStack(f"http://127.0.0.1:{gateway_port}", grpc_port, process)
        try:
            _wait_ready(stack, log_path)
            yield stack
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=SERVE_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_ready(stack: ServedStack, log_path: Path) -> None:
    deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise RuntimeError(f"hetgateway serve exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(stack.url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"hetgateway serve not ready in {SERVE_READY_TIMEOUT_S} s")


@contextlib.contextmanager
def embedded_triton(repository: Path, workdir: Path, *, name: str = "repo",
                    edit: Callable[[Path], None] | None = None) -> Iterator[TritonProcess]:
    """The embedded Triton (``hetgateway.embedded``) serving ``repository`` on free loopback
    ports, ready; stopped on exit. The repository is derived into ``workdir / name`` with one
    ONNX Runtime thread per instance, then ``edit(derived_path)`` may change it (a queue
    policy, say). The backends directory in ``workdir`` is shared by every call."""
    derived = derive_repository([repository], workdir / name, ort_threads=1)
    if edit is not None:
        edit(derived.path)
    triton = TritonProcess(
        [derived.path],
        ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
        backend_dir=build_backend_dir(workdir / "backends"),
        log_path=workdir / f"{name}-triton.log",
    )
    with triton:
        triton.wait_ready(timeout_s=TRITON_READY_TIMEOUT_S)
        yield triton


def process_group_cpu_s(leader: int) -> float:
    """CPU seconds (user + system) used so far by every process in ``leader``'s process group
    (Triton and its Python-backend stubs), from /proc."""
    found = subprocess.run(["pgrep", "-g", str(leader)], capture_output=True, text=True,
                           check=False)
    return sum(process_cpu_s(int(pid)) for pid in found.stdout.split())


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
