#!/usr/bin/env python3
"""``tritonserver-cpu``: ``tritonserver`` for the CPU Triton image (docker/triton/Dockerfile.cpu).

The Triton binary of the ``nvidia-pytriton`` wheel (Triton 2.51, Python backend only: the one
``make serve`` runs), started on repositories derived the way ``hetgateway serve`` derives
them: each ONNX Runtime model becomes a Python-backend model running ONNX Runtime on the same
``model.onnx`` (``hetgateway.embedded.repository``).

Typical usage (docker-compose.cpu.yml's command)::

    tritonserver-cpu --model-repository=/models --http-port=8000 ...

Every argument but ``--model-repository`` and ``--ort-threads`` goes to ``tritonserver``
unchanged, so the command reads like the GPU service's. Each repository is derived under
``$HETSERVE_WORK_DIR`` (default ``/tmp``, a tmpfs in the read-only container), the wheel's
Python backend is linked into a backend directory there, and then this process becomes
``tritonserver`` (``exec``): it is PID 1 and receives ``docker stop``'s SIGTERM itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository
from hetgateway.embedded.triton_process import pytriton_paths

WORK_DIR_ENV = "HETSERVE_WORK_DIR"
DEFAULT_WORK_DIR = "/tmp"


@dataclass(frozen=True)
class CpuTritonArgs:
    """The command line split: what this wrapper consumes, and what goes to tritonserver."""

    repositories: tuple[Path, ...]
    ort_threads: int
    passthrough: tuple[str, ...]


def parse_args(argv: Sequence[str]) -> CpuTritonArgs:
    """Split ``argv`` into the repositories to derive, ORT threads and tritonserver's flags."""
    parser = argparse.ArgumentParser(prog="tritonserver_cpu", allow_abbrev=False)
    parser.add_argument("--model-repository", action="append", type=Path, required=True,
                        dest="repositories")
    parser.add_argument("--ort-threads", type=int, default=1)
    known, rest = parser.parse_known_args(list(argv))
    return CpuTritonArgs(tuple(known.repositories), known.ort_threads, tuple(rest))


def tritonserver_command(args: CpuTritonArgs, work_dir: Path) -> list[str]:
    """Derive the repositories under ``work_dir`` and return the ``tritonserver`` command."""
    derived = derive_repository(args.repositories, work_dir / "repo", ort_threads=args.ort_threads)
    backends = build_backend_dir(work_dir / "backends")
    return [
        str(pytriton_paths().tritonserver),
        f"--model-repository={derived.path}",
        f"--backend-directory={backends}",
        *args.passthrough,
    ]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Derive, then replace this process with ``tritonserver``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work_dir = Path(tempfile.mkdtemp(prefix="hetserve-triton-",
                                     dir=os.environ.get(WORK_DIR_ENV, DEFAULT_WORK_DIR)))
    command = tritonserver_command(args, work_dir)
    # The wheel's libraries on LD_LIBRARY_PATH, this Python's bin first on PATH (the stub's
    # numpy and onnxruntime): the environment `hetgateway serve` gives Triton.
    environment = TritonProcess([], ports=TritonPorts(), backend_dir=work_dir).environment()
    print("tritonserver_cpu:", " ".join(command), flush=True)
    os.execve(command[0], command, environment)


if __name__ == "__main__":
    main()
