"""Locust load for the hetserve gateway: real Fashion-MNIST test images, both demo models.

Typical usage (``make load`` runs it through ``tests/load/run_locust.sh``)::

    locust -f tests/load/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8080

Each simulated user sends, with these weights:

- JSON, one base64 PNG (4), a batch of 8 (2) or 32 (1), to ``/v1/models/{model}/predict``;
- multipart, 4 ``images`` files and a ``top_k`` field (2);
- JSON, one image, to the default model's ``/v1/predict`` (1);

to a model drawn from ``$HETSERVE_LOAD_MODELS`` (default ``fashion_het,fashion_det``); with
``$HETSERVE_LOAD_MAX_REQUESTS_PER_USER`` set, each user stops after that many requests. The images
are the first ``NUM_IMAGES`` of the Fashion-MNIST test set (``$FASHION_MNIST_DIR``, default the
Debian package's directory), encoded as PNG once per process. A request fails unless it is
answered 200 with one result per image, each with ``TOP_K`` predictions.
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import os
import random
import struct
import uuid
from pathlib import Path
from typing import NamedTuple

from locust import FastHttpUser, between, task
from locust.exception import StopUser
from PIL import Image

DATASET_DIR_ENV = "FASHION_MNIST_DIR"
DEFAULT_DATASET_DIR = "/usr/share/datasets/fashion-mnist"
TEST_IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
MODELS_ENV = "HETSERVE_LOAD_MODELS"
DEFAULT_MODELS = "fashion_het,fashion_det"
API_KEY_ENV = "HETSERVE_API_KEY"
MAX_REQUESTS_ENV = "HETSERVE_LOAD_MAX_REQUESTS_PER_USER"
"""Optional cap on each user's requests (unset: no cap, the run time bounds the run)."""
NUM_IMAGES = 512
TOP_K = 3
SINGLE, SMALL_BATCH, LARGE_BATCH, MULTIPART_BATCH = 1, 8, 32, 4
IDX_IMAGES_MAGIC = 2051
"""IDX header of a uint8 image file: magic, count, rows, cols (big-endian int32s)."""


class IdxImages(NamedTuple):
    """Grey images from an IDX3 file: each ``height * width`` bytes, row-major."""

    pixels: list[bytes]
    width: int
    height: int


def read_idx_images(path: Path, *, limit: int) -> IdxImages:
    """The first ``limit`` images of a gzipped IDX3 file."""
    with gzip.open(path, "rb") as stream:
        magic, count, rows, cols = struct.unpack(">4i", stream.read(16))
        if magic != IDX_IMAGES_MAGIC:
            raise ValueError(f"{path} is not an IDX3 uint8 image file (magic {magic})")
        size = rows * cols
        data = stream.read(size * min(count, limit))
    return IdxImages([data[i : i + size] for i in range(0, len(data), size)], cols, rows)


@functools.cache
def png_images() -> tuple[bytes, ...]:
    """The test images as PNG files, read and encoded once per process."""
    directory = Path(os.environ.get(DATASET_DIR_ENV, DEFAULT_DATASET_DIR))
    idx = read_idx_images(directory / TEST_IMAGES_FILE, limit=NUM_IMAGES)
    encoded = []
    for raw in idx.pixels:
        buffer = io.BytesIO()
        Image.frombytes("L", (idx.width, idx.height), raw).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return tuple(encoded)


def multipart_body(files: list[bytes], *, top_k: int) -> tuple[str, bytes]:
    """A ``multipart/form-data`` body with ``images`` file parts and a ``top_k`` field;
    returns (Content-Type, body). Locust's FastHttpUser has no ``files=``, so it is built here."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n{top_k}\r\n'.encode()
    ]
    for index, data in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="image{index}.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


class GatewayUser(FastHttpUser):
    """One client of the gateway, thinking 0-50 ms between requests."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.models = [m.strip() for m in os.environ.get(MODELS_ENV, DEFAULT_MODELS).split(",")]
        self.images = png_images()
        api_key = os.environ.get(API_KEY_ENV)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        cap = os.environ.get(MAX_REQUESTS_ENV)
        self.requests_left = int(cap) if cap else None

    def _sample(self, count: int) -> list[bytes]:
        return random.sample(self.images, count)

    def _json_predict(self, path: str, name: str, batch: int) -> None:
        inputs = [{"image": base64.b64encode(png).decode("ascii")} for png in self._sample(batch)]
        body = json.dumps({"inputs": inputs, "top_k": TOP_K})
        headers = {**self.headers, "Content-Type": "application/json"}
        self._post(path, name, batch, data=body, headers=headers)

    def _post(self, path: str, name: str, batch: int, *, data, headers) -> None:
        if self.requests_left is not None:
            if self.requests_left <= 0:
                raise StopUser()
            self.requests_left -= 1
        with self.client.post(
            path, data=data, headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code == 0:
                response.failure(f"no answer: {response.error}")
                return
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return
            results = response.json().get("results", [])
            if len(results) != batch or any(len(r["predictions"]) != TOP_K for r in results):
                response.failure(f"expected {batch} results of {TOP_K} predictions")

    @task(4)
    def json_single(self) -> None:
        model = random.choice(self.models)
        self._json_predict(f"/v1/models/{model}/predict", f"{model} json b{SINGLE}", SINGLE)

    @task(2)
    def json_small_batch(self) -> None:
        model = random.choice(self.models)
        path = f"/v1/models/{model}/predict"
        self._json_predict(path, f"{model} json b{SMALL_BATCH}", SMALL_BATCH)

    @task(1)
    def json_large_batch(self) -> None:
        model = random.choice(self.models)
        path = f"/v1/models/{model}/predict"
        self._json_predict(path, f"{model} json b{LARGE_BATCH}", LARGE_BATCH)

    @task(2)
    def multipart_batch(self) -> None:
        model = random.choice(self.models)
        content_type, body = multipart_body(self._sample(MULTIPART_BATCH), top_k=TOP_K)
        headers = {**self.headers, "Content-Type": content_type}
        name = f"{model} multipart b{MULTIPART_BATCH}"
        self._post(f"/v1/models/{model}/predict", name, MULTIPART_BATCH, data=body, headers=headers)

    @task(1)
    def default_model_single(self) -> None:
        self._json_predict("/v1/predict", f"default json b{SINGLE}", SINGLE)
