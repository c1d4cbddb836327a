"""Faults: Triton killed in the middle of a load. Every in-flight request gets a definite answer
(200, 503 or 504) and none hangs; Triton back, the gateway serves again without a restart; the
embedded launcher restarts a crashed Triton itself, and /readyz tells the truth throughout."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INFER_TIMEOUT_S = 3.0
ANSWER_BOUND_S = INFER_TIMEOUT_S + 5.0
DEFINITE_STATUSES = {200, 503, 504}
LOAD_THREADS = 6
RECOVERY_BOUND_S = 90.0
SERVE_START_BOUND_S = 240.0


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _wait_status(url: str, expected: int, *, bound_s: float) -> float:
    """Poll ``url`` until it answers ``expected``; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        try:
            if httpx.get(url, timeout=2.0).status_code == expected:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {expected} within {bound_s} s")


class LoadRecorder:
    """Threads posting predictions until stopped, recording each status and duration."""

    def __init__(self, url: str, body: dict) -> None:
        self.url, self.body = url, body
        self.answers: list[tuple[int, float]] = []
        self.hung: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        with httpx.Client(timeout=ANSWER_BOUND_S) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = client.post(self.url, json=self.body).status_code
                except httpx.TimeoutException as error:
                    self.hung.append(repr(error))
                    continue
                self.answers.append((status, time.monotonic() - started))

    def __enter__(self) -> LoadRecorder:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ANSWER_BOUND_S * 2)


def test_killed_triton_gives_every_request_a_definite_answer_and_recovers_without_restart(
    launch_triton: Callable, launch_gateway: Callable, fashion_mnist, model_cards: dict
) -> None:
    triton = launch_triton()
    gateway = launch_gateway(triton.grpc_url, wait_for="/readyz", infer_timeout_s=INFER_TIMEOUT_S)
    model = sorted(model_cards)[0]
    url = f"{gateway}/v1/models/{model}/predict"
    body = {"inputs": [{"image": _png(fashion_mnist.images[0])}], "top_k": 1}
    assert httpx.post(url, json=body, timeout=30).status_code == 200

    with LoadRecorder(url, body) as load:
        time.sleep(1.0)
        os.killpg(triton.process.pid, signal.SIGKILL)
        _wait_status(f"{gateway}/readyz", 503, bound_s=5.0)
        time.sleep(2.0)
    statuses = {status for status, _ in load.answers}
    assert not load.hung, f"requests hung: {load.hung[:3]}"
    assert statuses <= DEFINITE_STATUSES, f"indefinite answers: {statuses - DEFINITE_STATUSES}"
    assert 200 in statuses and statuses & {503, 504}
    assert max(duration for _, duration in load.answers) < ANSWER_BOUND_S

    down = httpx.post(url, json=body, timeout=ANSWER_BOUND_S)
    assert down.status_code == 503 and down.json()["error"]["code"] in {
        "backend_unavailable", "model_not_ready"}
    assert "retry-after" in down.headers

    triton.start()
    _wait_status(f"{gateway}/readyz", 200, bound_s=RECOVERY_BOUND_S)
    again = httpx.post(url, json=body, timeout=30)
    assert again.status_code == 200 and again.json()["model"]["name"] == model


def _tritonserver_child(serve: psutil.Process) -> psutil.Process | None:
    for child in serve.children(recursive=True):
        if child.name() == "tritonserver" and child.status() != psutil.STATUS_ZOMBIE:
            return child
    return None


def test_embedded_launcher_restarts_a_crashed_triton_and_readyz_tells_the_truth(
    model_repository: Path, tmp_path: Path, unused_port: Callable[[], int]
) -> None:
    port = unused_port()
    log_path = tmp_path / "serve.log"
    command = [
        sys.executable, "-m", "hetgateway.cli", "serve", "--model-repository",
        str(model_repository), "--port", str(port), "--triton-http-port", str(unused_port()),
        "--triton-grpc-port", str(unused_port()), "--triton-metrics-port", str(unused_port()),
    ]
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    readyz = f"http://127.0.0.1:{port}/readyz"
    second: psutil.Process | None = None
    try:
        _wait_status(readyz, 200, bound_s=SERVE_START_BOUND_S)
        first = _tritonserver_child(psutil.Process(serve.pid))
        assert first is not None
        first.kill()
        _wait_status(readyz, 503, bound_s=5.0)
        _wait_status(readyz, 200, bound_s=RECOVERY_BOUND_S)
        second = _tritonserver_child(psutil.Process(serve.pid))
        assert second is not None and second.pid != first.pid
        assert "exited unexpectedly; restarting" in log_path.read_text(errors="replace")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    assert serve.returncode is not None
    time.sleep(1.0)
    assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
