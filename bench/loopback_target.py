"""Shared by the soak and overload benchmarks: the loopback-only target, Fashion-MNIST images
as PNG, and latency percentiles.

Typical usage::

    url = loopback_url("http://127.0.0.1:8080")    # ValueError for any other host
    pngs = fashion_pngs(limit=64)
    print(percentiles_ms([0.010, 0.012, 0.031]))     # Percentiles(p50=12.0, p95=..., p99=...)
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_HEADER = ">4i"  # magic, count, rows, cols
MS_PER_S = 1000.0


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


def fashion_pngs(*, limit: int, directory: Path = FASHION_MNIST_DIR) -> list[bytes]:
    """The first ``limit`` Fashion-MNIST test images, PNG-encoded."""
    with gzip.open(directory / TEST_IMAGES, "rb") as stream:
        _, count, rows, cols = struct.unpack(IDX_HEADER, stream.read(16))
        size = rows * cols
        raw = stream.read(size * min(count, limit))
    pngs = []
    for start in range(0, len(raw), size):
        buffer = io.BytesIO()
        Image.frombytes("L", (cols, rows), raw[start : start + size]).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def percentiles_ms(latencies_s: list[float]) -> Percentiles:
    """p50/p95/p99 of latencies given in seconds, in milliseconds (NaN when empty)."""
    if not latencies_s:
        return Percentiles(float("nan"), float("nan"), float("nan"))
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * MS_PER_S, [50, 95, 99])
    return Percentiles(float(p50), float(p95), float(p99))
