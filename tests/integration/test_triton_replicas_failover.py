"""Triton replicas behind one gateway, on one machine: two ``hetgateway triton`` replicas on
127.0.0.2 and 127.0.0.3 (Linux routes all of 127.0.0.0/8 to loopback), one gateway whose
Triton address is ``ipv4:127.0.0.2:P,127.0.0.3:Q``.

Steady load is spread over both (each replica's own Triton metrics count inferences); one
replica's Triton SIGKILLed in the middle of a load: every request is still answered 200;
the replica's supervisor starts it again, /readyz counts it back, and traffic returns to it;
SIGTERM stops a replica cleanly while the other serves on.
"""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADDRESSES = ("127.0.0.2", "127.0.0.3")
REPLICA_START_BOUND_S = 240.0
RECOVERY_BOUND_S = 180.0
LOAD_THREADS = 4
STEADY_REQUESTS = 120
KILL_LOAD_BOUND_S = 8.0
ANSWER_BOUND_S = 30.0


class Replica:
    """``hetgateway triton`` on its own address and free ports; stopped by ``stop``."""

    def __init__(self, address: str, repository: Path, ports: tuple[int, int, int],
                 log_path: Path) -> None:
        self.address = address
        self.http_port, self.grpc_port, self.metrics_port = ports
        self._log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hetgateway.cli", "triton", "--model-repository",
                 str(repository), "--address", address, "--http-port", str(self.http_port),
                 "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def grpc_address(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def ready(self) -> bool:
        try:
            url = f"http://{self.address}:{self.http_port}/v2/health/ready"
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + REPLICA_START_BOUND_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica exited:\n{self._log_path.read_text()[-3000:]}")
            if self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"replica {self.address} not ready in {REPLICA_START_BOUND_S} s")

    def tritonserver(self) -> psutil.Process:
        """The ``tritonserver`` process this replica's supervisor runs now."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if child.name() == "tritonserver" and child.status() != psutil.STATUS_ZOMBIE:
                return child
        raise AssertionError(f"no tritonserver under replica {self.address}")

    def inferences(self) -> int:
        """Successful inferences this Triton process has counted, all models (its metrics)."""
        url = f"http://{self.address}:{self.metrics_port}/metrics"
        text = httpx.get(url, timeout=5.0).text
        return sum(
            int(float(value))
            for value in re.findall(r'^nv_inference_request_success\{[^}]*\} (\S+)$', text, re.M)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def replicas(
    model_repository: Path, tmp_path: Path, unused_port: Callable[[], int]
) -> Iterator[tuple[Replica, Replica]]:
    started = [
        Replica(address, model_repository, (unused_port(), unused_port(), unused_port()),
                tmp_path / f"replica-{address}.log")
        for address in ADDRESSES
    ]
    try:
        for replica in started:
            replica.wait_ready()
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def _png(pixels) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _statuses(url: str, body: dict, *, requests: int | None = None,
              until: threading.Event | None = None) -> list[int | str]:
    """POST ``body`` from ``LOAD_THREADS`` threads, ``requests`` in all or until ``until`` is
    set; every answer's status, or the exception's name for one that never came."""
    answers: list[int | str] = []
    budget = iter(range(requests)) if requests is not None else None
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=ANSWER_BOUND_S) as client:
            while True:
                with lock:
                    if until is not None and until.is_set():
                        return
                    if budget is not None and next(budget, None) is None:
                        return
                try:
                    answers.append(client.post(url, json=body).status_code)
                except httpx.HTTPError as error:
                    answers.append(type(error).__name__)

    threads = [threading.Thread(target=worker) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=KILL_LOAD_BOUND_S + ANSWER_BOUND_S * 2)
    return answers


def _replica_calls(gateway: str) -> Counter[str]:
    """The gateway's ``hetserve_triton_replica_requests_total`` with outcome ok, by replica."""
    text = httpx.get(f"{gateway}/metrics", timeout=5.0).text
    pattern = r'^hetserve_triton_replica_requests_total\{([^}]*)\} (\S+)$'
    counts: Counter[str] = Counter()
    for labels, value in re.findall(pattern, text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields["outcome"] == "ok":
            counts[fields["replica"]] += int(float(value))
    return counts


def _wait_replicas_ready(gateway: str, expected: int, *, bound_s: float) -> None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        answer = httpx.get(f"{gateway}/readyz", timeout=5.0)
        if answer.status_code == 200 and answer.json()["replicas_ready"] == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not count {expected} replicas ready in {bound_s} s")


def test_load_is_spread_over_replicas_survives_one_killed_and_returns_to_it(
    replicas: tuple[Replica, Replica], launch_gateway: Callable, fashion_mnist, model_cards: dict
) -> None:
    first, second = replicas
    target = f"ipv4:{first.grpc_address},{second.grpc_address}"
    gateway = launch_gateway(target, wait_for="/readyz", control_timeout_s=2.0)
    ready = httpx.get(f"{gateway}/readyz", timeout=5.0).json()
    assert (ready["replicas_ready"], ready["replicas"]) == (2, 2)
    model = sorted(model_cards)[0]
    url = f"{gateway}/v1/models/{model}/predict"
    body = {"inputs": [{"image": _png(fashion_mnist.images[0])}], "top_k": 1}

    # Steady load: both replicas serve, and the two together served every request.
    before = [first.inferences(), second.inferences()]
    statuses = _statuses(url, body, requests=STEADY_REQUESTS)
    assert Counter(statuses) == {200: STEADY_REQUESTS}
    served = [first.inferences() - before[0], second.inferences() - before[1]]
    assert min(served) >= STEADY_REQUESTS // 4, f"load not spread: {served}"
    assert sum(served) == STEADY_REQUESTS
    calls = _replica_calls(gateway)
    assert calls[first.grpc_address] + calls[second.grpc_address] == STEADY_REQUESTS

    # One replica's Triton SIGKILLed in the middle of the load: every request answered 200.
    killed = second.tritonserver()
    stop = threading.Event()
    load: list[list[int | str]] = []
    loader = threading.Thread(target=lambda: load.append(_statuses(url, body, until=stop)))
    loader.start()
    time.sleep(1.0)
    os.killpg(killed.pid, signal.SIGKILL)  # Triton and its Python-backend stubs
    time.sleep(KILL_LOAD_BOUND_S / 2)
    down = httpx.get(f"{gateway}/readyz", timeout=5.0).json()
    time.sleep(KILL_LOAD_BOUND_S / 2)
    stop.set()
    loader.join(timeout=ANSWER_BOUND_S * 3)
    answers = Counter(load[0])
    assert answers == {200: sum(answers.values())}, f"not every request answered 200: {answers}"
    assert sum(answers.values()) >= LOAD_THREADS * 4
    if not second.ready():  # the supervisor may already have it back
        assert (down["replicas_ready"], down["replicas"]) == (1, 2)

    # Its supervisor starts it again; /readyz counts it back and traffic returns to it.
    _wait_replicas_ready(gateway, 2, bound_s=RECOVERY_BOUND_S)
    restarted = second.tritonserver()
    assert restarted.pid != killed.pid
    before = second.inferences()
    calls_before = _replica_calls(gateway)[second.grpc_address]
    statuses = _statuses(url, body, requests=STEADY_REQUESTS)
    assert Counter(statuses) == {200: STEADY_REQUESTS}
    assert second.inferences() - before >= STEADY_REQUESTS // 4
    assert _replica_calls(gateway)[second.grpc_address] - calls_before >= STEADY_REQUESTS // 4

    # SIGTERM stops a replica cleanly: exit 0, its Triton gone; the gateway keeps answering.
    server = first.tritonserver()
    first.stop()
    assert first.process.returncode == 0
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    statuses = _statuses(url, body, requests=LOAD_THREADS * 4)
    assert Counter(statuses) == {200: LOAD_THREADS * 4}
