"""Locust (tests/load/locustfile.py) headless for a few seconds against the live gateway:
every request of the mix (JSON and multipart, batches of 1 to 32, both models) succeeds.
Bounded: USERS users, RUN_TIME, at most MAX_REQUESTS_PER_USER requests each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUN_TIME = "8s"
USERS = 3
MAX_REQUESTS_PER_USER = 150
PROCESS_TIMEOUT_S = 90


def test_locust_mix_runs_with_zero_failures(gateway_url, model_cards, tmp_path):
    env = {
        **os.environ,
        "HETSERVE_LOAD_RESULTS": str(tmp_path),
        "HETSERVE_LOAD_MODELS": ",".join(sorted(model_cards)),
        "VENV_BIN": str(Path(sys.executable).parent),
        "HETSERVE_LOAD_MAX_REQUESTS_PER_USER": str(MAX_REQUESTS_PER_USER),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "tests/load/run_locust.sh"), gateway_url, str(USERS), RUN_TIME],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OK: " in done.stdout and ", 0 failures," in done.stdout
    assert (tmp_path / "locust_stats.csv").is_file()
    assert (tmp_path / "report.html").is_file()
    names = (tmp_path / "locust_stats.csv").read_text()
    total = names.splitlines()[-1].split(",")
    assert 0 < int(total[2]) <= USERS * MAX_REQUESTS_PER_USER
    for model in model_cards:
        assert f"{model} multipart b4" in names and f"{model} json b32" in names
