"""``hetgateway serve`` starts the embedded Triton and the gateway (one worker, or several with
``--workers``); Ctrl-C (SIGINT) or SIGTERM stops both and leaves no process of Triton's process
group, and no gateway worker, behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READY_TIMEOUT_S = 240
STOP_TIMEOUT_S = 30


def pgrep(*args: str) -> list[int]:
    found = subprocess.run(["pgrep", *args], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("hetgateway serve never became ready")


@pytest.mark.parametrize(
    ("stop_signal", "workers"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)],
    ids=["ctrl-c", "sigterm", "sigterm-2-workers"],
)
def test_serve_runs_triton_and_the_gateway_and_stops_both_on_a_signal(
    model_repository, model_cards, unused_port, stop_signal, workers
):
    gateway_port, grpc_port = unused_port(), unused_port()
    command = [
        sys.executable, "-m", "hetgateway.cli", "serve",
        "--model-repository", str(model_repository), "--port", str(gateway_port),
        "--triton-http-port", str(unused_port()), "--triton-grpc-port", str(grpc_port),
        "--triton-metrics-port", str(unused_port()), "--log-level", "warning",
        "--workers", str(workers),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{gateway_port}/readyz", process)
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/v1/models") as answer:
            assert {m["name"] for m in json.load(answer)["models"]} == set(model_cards)
        tritons = pgrep("-f", f"grpc-port={grpc_port}")
        assert len(tritons) == 1
        group = pgrep("-g", str(tritons[0]))  # Triton leads its group: it and its Python stubs
        assert len(group) >= 1 + len(model_cards)
        gateway_workers = [
            child for child in psutil.Process(process.pid).children()
            if any("spawn_main" in part for part in child.cmdline())
        ]
        assert len(gateway_workers) == (workers if workers > 1 else 0)

        process.send_signal(stop_signal)
        assert process.wait(timeout=STOP_TIMEOUT_S) == 0
        assert pgrep("-g", str(tritons[0])) == []
        assert [w.pid for w in gateway_workers if _running(w)] == []
        assert pgrep("-f", f"grpc-port={grpc_port}") == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
