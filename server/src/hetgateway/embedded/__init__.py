"""Embedded CPU mode: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel serving a
repository derived from ``model_repo/`` (ONNX models run by ONNX Runtime inside Triton's
Python backend), with the gateway in front.

Typical usage::

    derived = derive_repository([Path("model_repo")], workdir / "repo")
    with TritonProcess([derived.path], ports=TritonPorts(8000, 8001, 8002),
                       backend_dir=build_backend_dir(workdir / "backends")) as triton:
        triton.wait_ready(timeout_s=120)
"""

from hetgateway.embedded.repository import DerivedRepository, derive_repository
from hetgateway.embedded.triton_process import (
    TritonPorts,
    TritonProcess,
    TritonStartError,
    build_backend_dir,
)

__all__ = [
    "DerivedRepository",
    "TritonPorts",
    "TritonProcess",
    "TritonStartError",
    "build_backend_dir",
    "derive_repository",
]
