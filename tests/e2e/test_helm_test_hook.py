"""The chart's ``helm test`` hook (deploy/helm/hetserve/files/predict-test.py, the command of its
test Pod, see tests/unit/deploy/test_helm_chart.py) run against a live gateway: it passes when a
prediction comes back, sends the API key from the keys file the gateway reads, and fails with a
reason when the gateway refuses or cannot be reached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/helm/hetserve/files/predict-test.py"
API_KEY = "helm-test-hook-key"


def run_hook(url: str, *, keys_file: Path | None = None, timeout_s: float = 30):
    """The test Pod's command (``python -c <script>``) with the Pod's environment."""
    env = {**os.environ, "HETSERVE_TEST_URL": url, "HETSERVE_TEST_TIMEOUT_S": str(timeout_s)}
    env.pop("HETSERVE_API_KEYS_FILE", None)
    if keys_file is not None:
        env["HETSERVE_API_KEYS_FILE"] = str(keys_file)
    return subprocess.run([sys.executable, "-c", SCRIPT.read_text()], env=env,
                          capture_output=True, text=True, timeout=timeout_s + 30, check=False)


def test_the_hook_passes_when_the_gateway_answers_a_prediction(gateway_url, model_cards):
    done = run_hook(gateway_url)
    assert done.returncode == 0, done.stderr
    model, rest = done.stdout.removeprefix("OK ").split(": ", 1)
    assert model in model_cards
    assert rest.split(" p=")[0] in model_cards[model].labels


def test_the_hook_sends_the_first_key_of_the_gateways_keys_file(
    triton_server, launch_gateway, tmp_path
):
    keys = tmp_path / "keys"
    keys.write_text(f"# mounted from the Secret\n{API_KEY}\nanother-key\n")
    url = launch_gateway(triton_server.grpc_url, wait_for="/readyz", api_keys_file=keys)
    assert run_hook(url, keys_file=keys).returncode == 0
    refused = run_hook(url)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_the_hook_fails_with_the_reason_when_nothing_answers(unused_port):
    started = time.monotonic()
    done = run_hook(f"http://127.0.0.1:{unused_port()}", timeout_s=3)
    assert done.returncode != 0 and "FAIL after retries" in done.stderr
    assert time.monotonic() - started < 20
