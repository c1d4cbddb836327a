"""Fixtures of the container tests (``make test-containers``): the images built with podman on
a locally made base, and the CPU compose stack (docker-compose.yml + docker-compose.cpu.yml)
run with podman on the host network.

They run only when ``HETSERVE_CONTAINER_TESTS=1`` (the make target sets it): building the
images takes minutes, which ``make test`` does not spend. Otherwise every test here skips.

- ``container_tests_enabled``: skips the test unless enabled and podman is installed.
- ``compose_config`` -> dict: the two compose files merged as Docker Compose merges them;
  ``compose_config_with(VAR=value)`` the same with more variables set.
- ``local_images`` -> dict: compose image name -> local image (stand-ins for the registry
  images), every image of the CPU stack built (podman's layer cache makes a rebuild cheap).
- ``cpu_stack`` -> ``PodmanStack``: triton, gateway and prometheus up and healthy; stopped and
  removed at the end of the module.
- ``make_serve_url`` -> str: `make serve` (embedded Triton and gateway) on free loopback ports,
  the reference the containerised gateways' answers are compared with; stopped with the module.

The registry tests (test_registry.py) add Debian's docker-registry on loopback (registry.py), an
empty podman image store of their own, and the CPU stack run from the images pulled out of it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENABLE_ENV = "HETSERVE_CONTAINER_TESTS"
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml")
# The compose files' variables as a user leaves them, but a short load run.
COMPOSE_ENV = {"LOAD_USERS": "4", "LOAD_TIME": "10s"}
STACK_SERVICES = ("triton", "gateway", "prometheus")
STACK_READY_TIMEOUT_S = 300.0
SERVE_READY_TIMEOUT_S = 240


def _load(name: str) -> ModuleType:
    """Import ``name`` from this directory (once per session; tests/unit/deploy does too)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


compose_files = _load("compose_files")
podman_stack = _load("podman_stack")
local_images_module = _load("local_images")
_load("answers")
_load("registry")


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV) == "1"


@pytest.fixture(scope="session")
def container_tests_enabled() -> None:
    if not enabled():
        pytest.skip(f"container tests run with `make test-containers` ({ENABLE_ENV}=1)")
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (make test-containers installs it)")


@pytest.fixture(scope="session")
def compose_config() -> dict[str, Any]:
    return compose_files.load_compose(COMPOSE_FILES, COMPOSE_ENV)


@pytest.fixture(scope="session")
def compose_config_with() -> Callable[..., dict[str, Any]]:
    """The merged compose files with more variables set: ``compose_config_with(VAR="value")``."""
    return lambda **env: compose_files.load_compose(COMPOSE_FILES, {**COMPOSE_ENV, **env})


@pytest.fixture(scope="session")
def local_images(container_tests_enabled, compose_config) -> dict[str, str]:
    try:
        return local_images_module.build_all(compose_config)
    except local_images_module.BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def cpu_stack(local_images, compose_config, tmp_path_factory) -> Iterator[Any]:
    stack = podman_stack.PodmanStack(
        compose_config,
        project=f"hetserve-test-{uuid.uuid4().hex[:8]}",
        root=ROOT,
        work_dir=tmp_path_factory.mktemp("stack"),
        images=local_images,
        ready_timeout_s=STACK_READY_TIMEOUT_S,
    )
    try:
        stack.up(STACK_SERVICES)
        yield stack
    finally:
        stack.down()


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "hetgateway serve exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("hetgateway serve never became ready")


@pytest.fixture(scope="module")
def make_serve_url(container_tests_enabled, unused_port, tmp_path_factory) -> Iterator[str]:
    """What `make serve` runs (`hetgateway serve --model-repository model_repo`), on free ports:
    the reference a containerised gateway's answers are compared with."""
    port = unused_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hetgateway.cli", "serve", "--model-repository",
         str(ROOT / "model_repo"), "--port", str(port), "--triton-http-port", str(unused_port()),
         "--triton-grpc-port", str(unused_port()), "--triton-metrics-port", str(unused_port()),
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, SERVE_READY_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
