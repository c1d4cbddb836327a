"""The answers the docs show are what the shipped models answer now.

The README shows the curl command and a shortened real answer; the client README shows the
``hetclient predict`` command and its output. Each is run here against the live gateway
serving ``model_repo/``: every value the README's answer shows (it leaves fields out, never
changes them) equals the live answer's, floats to 1e-6, and the client README's output is the
command's output, line for line.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)
FLOAT_TOLERANCE = 1e-6
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def shipped_models(model_repository: Path) -> None:
    if model_repository.resolve() != (REPO_ROOT / "model_repo").resolve():
        pytest.skip(f"the docs show the shipped models; this session serves {model_repository}")


def fences(document: Path) -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE.finditer(document.read_text())]


def assert_shown_in(shown: Any, live: Any, where: str = "answer") -> None:
    """Every value of ``shown`` is the live one: objects may leave keys out, lists may stop
    early; numbers agree to ``FLOAT_TOLERANCE``, everything else exactly."""
    if isinstance(shown, dict):
        assert isinstance(live, dict), where
        for key, value in shown.items():
            assert key in live, f"{where}.{key} is not in the live answer"
            assert_shown_in(value, live[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(live, list) and len(shown) <= len(live), where
        for index, (value, actual) in enumerate(zip(shown, live, strict=False)):
            assert_shown_in(value, actual, f"{where}[{index}]")
    elif isinstance(shown, float):
        assert actual_close(shown, live), f"{where}: the README shows {shown}, live {live}"
    else:
        assert shown == live, f"{where}: the README shows {shown!r}, live {live!r}"


def actual_close(shown: float, live: Any) -> bool:
    return isinstance(live, int | float) and abs(shown - live) <= FLOAT_TOLERANCE


def test_the_readme_answer_is_the_live_answer(gateway_url, shipped_models):
    blocks = fences(REPO_ROOT / "README.md")
    command = next(body for lang, body in blocks if body.startswith("curl "))
    shown = json.loads(next(body for lang, body in blocks if lang == "json"))
    words = shlex.split(command.replace("\\\n", " "))
    fields = dict(words[index + 1].split("=", 1) for index, word in enumerate(words)
                  if word == "-F")
    path = urlsplit(next(word for word in words if word.startswith("http://"))).path
    image = REPO_ROOT / fields.pop("images").removeprefix("@")

    response = httpx.post(f"{gateway_url}{path}", data=fields,
                          files={"images": (image.name, image.read_bytes(), "image/png")},
                          timeout=30)

    assert response.status_code == 200, response.text
    assert_shown_in(shown, response.json())


def test_the_client_readme_output_is_the_commands_output(gateway_url, shipped_models):
    shown = next(body for lang, body in fences(REPO_ROOT / "client" / "README.md")
                 if body.startswith("$ hetclient predict"))
    command, *output = shown.splitlines()
    arguments = shlex.split(command.removeprefix("$ hetclient "))

    ran = subprocess.run([sys.executable, "-m", "hetclient.cli", *arguments, "--url", gateway_url],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                         check=False)

    assert ran.returncode == 0, ran.stderr
    assert [line.rstrip() for line in ran.stdout.splitlines()] == [
        line.rstrip() for line in output]
