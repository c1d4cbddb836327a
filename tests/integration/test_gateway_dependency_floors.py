"""The gateway installed at its dependency floors (``make test-floor``: a virtualenv with
``server/constraints-floor.txt``) in front of the real Triton answers JSON and multipart
predictions exactly as the gateway at today's versions does."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

FLOOR_PYTHON_ENV = "HETSERVE_FLOOR_PYTHON"
CONSTRAINTS = Path(__file__).resolve().parents[2] / "server" / "constraints-floor.txt"
EXAMPLE = Path(__file__).resolve().parents[2] / "server/src/hetgateway/static/examples"


def pinned() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.split("[")[0]] = version
    return pins


def installed(python: str, names: list[str]) -> dict[str, str]:
    script = ("import importlib.metadata as m, sys; "
              "print(' '.join(m.version(n) for n in sys.argv[1:]))")
    versions = subprocess.run([python, "-c", script, *names], capture_output=True, text=True,
                              check=True).stdout.split()
    return dict(zip(names, versions, strict=True))


def without_id(answer: httpx.Response) -> dict:
    assert answer.status_code == 200, answer.text
    return {key: value for key, value in answer.json().items() if key != "request_id"}


def test_the_gateway_at_its_floors_answers_like_the_current_one(
    triton_server, gateway_url, launch_gateway_process, model_cards
):
    python = os.environ.get(FLOOR_PYTHON_ENV)
    if not python:
        pytest.skip(f"needs the floor virtualenv: `make test-floor` sets {FLOOR_PYTHON_ENV}")
    floors = pinned()
    assert installed(python, list(floors)) == floors
    floor = launch_gateway_process(triton_server.grpc_url, wait_for="/readyz", python=python)
    image = (EXAMPLE / "6_shirt.png").read_bytes()
    body = {"inputs": [{"image": base64.b64encode(image).decode()}], "top_k": 3}
    files = [("images", (name, image, "image/png")) for name in ("a.png", "b.png")]
    for model in sorted(model_cards):
        route = f"/v1/models/{model}/predict"
        for payload in ({"json": body}, {"files": files}):
            answers = [httpx.post(url + route, timeout=30, **payload)
                       for url in (floor.url, gateway_url)]
            assert without_id(answers[0]) == without_id(answers[1])
