"""The Dockerfiles: minimal, copying what their images need, and no PyTorch in the gateway."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from compose_files import base_images

ROOT = Path(__file__).resolve().parents[3]
GATEWAY_DOCKERFILE = ROOT / "server/Dockerfile"
LOCUST_DOCKERFILE = ROOT / "docker/locust/Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_gateway_image_copies_and_installs_only_contract_and_server():
    steps = _instructions(GATEWAY_DOCKERFILE)
    copies = [args.split()[0] for keyword, args in steps if keyword == "COPY"]
    assert copies == ["contract/", "server/"]
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "pip install ./contract ./server" in runs
    assert "[embedded]" not in runs


def test_gateway_image_never_installs_torch_or_triton_server():
    steps = _instructions(GATEWAY_DOCKERFILE)
    commands = " ".join(args for _, args in steps).lower()
    for heavy in ("torch", "onnxruntime", "pytriton", "tritonserver"):
        assert heavy not in commands, heavy
    server = tomllib.loads((ROOT / "server/pyproject.toml").read_text())
    dependencies = " ".join(server["project"]["dependencies"]).lower()
    assert "torch" not in dependencies and "pytriton" not in dependencies


def test_gateway_image_runs_the_gateway_alone_as_a_non_root_user():
    steps = _instructions(GATEWAY_DOCKERFILE)
    assert base_images(GATEWAY_DOCKERFILE) == ["python:3.11.10-slim-bookworm"]
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    (cmd,) = [args for keyword, args in steps if keyword == "CMD"]
    assert cmd == '["hetgateway", "gateway"]'
    script = tomllib.loads((ROOT / "server/pyproject.toml").read_text())["project"]["scripts"]
    assert "hetgateway" in script


def test_locust_image_carries_the_locustfile():
    steps = _instructions(LOCUST_DOCKERFILE)
    assert ("COPY", "tests/load/locustfile.py /home/locust/locustfile.py") in steps


def test_the_build_context_sends_only_what_the_images_copy():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*"
    assert {"!contract/", "!server/", "!tests/load/"} <= set(patterns)
    assert "**/*.egg-info" in patterns
