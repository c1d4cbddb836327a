"""The deployment tests read the compose files with the merge, and check the podman
translation, that the container tests run (tests/containers/compose_files.py,
podman_stack.py and local_images.py), importable here under those names; and the CPU
Triton's entrypoint (docker/triton/tritonserver_cpu.py) as ``tritonserver_cpu``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MODULES = {
    "compose_files": ROOT / "tests/containers/compose_files.py",
    "podman_stack": ROOT / "tests/containers/podman_stack.py",
    "tritonserver_cpu": ROOT / "docker/triton/tritonserver_cpu.py",
    "local_images": ROOT / "tests/containers/local_images.py",  # imports the two above
}

for _name, _path in MODULES.items():
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, _path)
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)
