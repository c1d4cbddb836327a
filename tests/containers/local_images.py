"""The images of the CPU compose stack built with podman on a machine without a registry.

The base images come from here instead of a registry: ``PYTHON_BASE`` from
docker/base/build-python-base.sh (debootstrap, cached in podman's store), and stand-ins for
the registry images the stack builds on or runs (docker/base/Dockerfile.*). Every Dockerfile
declaring one of ``BASE_ARGS`` gets the stand-in's name for it; the Dockerfiles' defaults stay
the official images. Builds run niced, on the host network (PyPI, Debian), with podman's layer
cache: a rebuild of unchanged files takes seconds.

Typical usage::

    images = build_all(load_compose(files, env={}))
    images["prom/prometheus:v2.55.1"]                 # localhost/hetserve/prometheus:...
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compose_files import dockerfile_args
from podman_stack import BASE_ULIMITS, PODMAN

ROOT = Path(__file__).resolve().parents[2]
BASE_SCRIPT = ROOT / "docker/base/build-python-base.sh"
PYTHON_BASE = "localhost/hetserve/python:3.11-slim-bookworm"
LOCUST_BASE = "localhost/hetserve/locust-base:2.32.4"
PROMETHEUS_STAND_IN = "localhost/hetserve/prometheus:debian-bookworm"
# Build arguments naming a base image -> the local stand-in given to every Dockerfile that
# declares them.
BASE_ARGS = {"PYTHON_IMAGE": PYTHON_BASE, "DEBIAN_IMAGE": PYTHON_BASE, "LOCUST_IMAGE": LOCUST_BASE,
             "BUSYBOX_IMAGE": PYTHON_BASE}
STAND_IN_BUILDS = (  # (image, Dockerfile), built before the services' images
    (LOCUST_BASE, ROOT / "docker/base/Dockerfile.locust"),
    (PROMETHEUS_STAND_IN, ROOT / "docker/base/Dockerfile.prometheus"),
)
BUILD_TIMEOUT_S = 1800


class BuildError(RuntimeError):
    """An image failed to build; the message holds the end of the build's output."""


def build_image(image: str, dockerfile: Path, context: Path) -> float:
    """``podman build`` (niced, host network for PyPI and Debian); returns the seconds taken."""
    declared = dockerfile_args(dockerfile)
    build_args = [f"--build-arg={name}={value}" for name, value in BASE_ARGS.items()
                  if name in declared]
    command = ["nice", "-n", "10", *PODMAN, "build", "--network=host",
               *(f"--ulimit={limit}" for limit in BASE_ULIMITS),
               *build_args, "--file", str(dockerfile), "--tag", image, str(context)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                            check=False)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        raise BuildError(f"building {image} failed:\n{output}")
    return time.monotonic() - started


def build_all(config: Mapping[str, Any]) -> dict[str, str]:
    """Build the base, the stand-ins and every service with a ``build``; returns the registry
    images the stack runs mapped to their local stand-ins."""
    started = time.monotonic()
    subprocess.run(["bash", str(BASE_SCRIPT), PYTHON_BASE], check=True, timeout=BUILD_TIMEOUT_S)
    print(f"base image ready in {time.monotonic() - started:.0f} s")
    for image, dockerfile in STAND_IN_BUILDS:
        print(f"built {image} in {build_image(image, dockerfile, dockerfile.parent):.0f} s")
    for service in config["services"].values():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            dockerfile = context / service["build"]["dockerfile"]
            seconds = build_image(service["image"], dockerfile, context)
            print(f"built {service['image']} in {seconds:.0f} s")
    return {config["services"]["prometheus"]["image"]: PROMETHEUS_STAND_IN}
