"""Start, probe and stop the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

Triton runs in its own process group (its Python-backend stubs are its children), so
``stop`` can end every process it started: SIGTERM to Triton, then SIGKILL to the group
after a bound. On Linux Triton also gets SIGTERM when the launching process dies.

Typical usage::

    ports = TritonPorts(http=8000, grpc=8001, metrics=8002)
    with TritonProcess([repo], ports=ports, backend_dir=build_backend_dir(tmp)) as triton:
        triton.wait_ready(timeout_s=120)
        print(triton.grpc_url)          # 127.0.0.1:8001
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
DEFAULT_EXIT_TIMEOUT_S = 5
READY_POLL_INTERVAL_S = 0.2
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 4000
PYTHON_STUB_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_PR_SET_PDEATHSIG = 1
EXPLICIT_MODEL_CONTROL_ARGS = (
    "--model-control-mode=explicit",
    "--load-model=*",
    "--strict-readiness=false",
)
"""Every model loaded at start, then loaded again (a new version, new files) or unloaded only
when asked through Triton's repository API (``embedded.repository_watcher``, the gateway).
Readiness is per model (the gateway's ``/readyz`` asks each served model): Triton's strict
readiness would stay false for good once a broken version was refused, although the previous
version serves. Startup models load before Triton opens its endpoints, so ``wait_ready``
still means "every model loaded"."""


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready in time; the message holds its log's tail."""


@dataclass(frozen=True)
class TritonPorts:
    """Triton's three ports on loopback."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


@dataclass(frozen=True)
class PytritonPaths:
    """Where the wheel keeps the server binary, the Python backend and its libraries."""

    tritonserver: Path
    python_backend: Path
    python_stub: Path
    libraries: Path


def pytriton_paths() -> PytritonPaths:
    """Locate the binaries of the installed ``nvidia-pytriton`` wheel."""
    try:
        import pytriton
    except ImportError as exc:
        raise TritonStartError(
            "the embedded mode needs nvidia-pytriton: pip install 'hetgateway[embedded]'"
        ) from exc
    package = Path(pytriton.__file__).resolve().parent
    server = package / "tritonserver"
    return PytritonPaths(
        tritonserver=server / "bin" / "tritonserver",
        python_backend=server / "backends" / "python",
        python_stub=server / "python_backend_stubs" / PYTHON_STUB_VERSION
        / "triton_python_backend_stub",
        libraries=package.parent / "nvidia_pytriton.libs",
    )


def build_backend_dir(target: Path) -> Path:
    """A backend directory ``target/python/`` with the wheel's Python backend and the stub
    for this interpreter's version (symlinks). Returns ``target``."""
    paths = pytriton_paths()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [p for p in paths.python_backend.iterdir() if p.is_file()] + [paths.python_stub]
    for source in sources:
        link = python_dir / source.name
        if not link.exists():
            link.symlink_to(source)
    return target


class TritonProcess:
    """One ``tritonserver`` serving ``repositories`` on ``address`` (loopback by default;
    ``hetgateway triton`` gives each replica its own, e.g. 127.0.0.2); with
    ``explicit_model_control`` its models can be loaded and unloaded while it runs."""

    def __init__(
        self,
        repositories: Sequence[Path],
        *,
        ports: TritonPorts,
        backend_dir: Path,
        log_path: Path | None = None,
        exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S,
        explicit_model_control: bool = False,
        address: str = LOOPBACK,
    ) -> None:
        self.repositories = tuple(repositories)
        self.explicit_model_control = explicit_model_control
        self.address = address
        self.ports = ports
        self.backend_dir = backend_dir
        self.log_path = log_path
        self.exit_timeout_s = exit_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"{self.address}:{self.ports.metrics}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        paths = pytriton_paths()
        return [
            str(paths.tritonserver),
            *(f"--model-repository={repo}" for repo in self.repositories),
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.ports.metrics}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *(EXPLICIT_MODEL_CONTROL_ARGS if self.explicit_model_control
              else ("--strict-readiness=true",)),
        ]

    def environment(self) -> dict[str, str]:
        """Triton's environment: the wheel's libraries, and this venv's ``bin`` first on PATH
        (that is how the Python stub finds the venv's numpy and onnxruntime)."""
        paths = pytriton_paths()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(paths.libraries), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running ``tritonserver`` process, if started."""
        return self._process

    def start(self) -> subprocess.Popen[bytes]:
        """Start Triton in a new process group (returns at once; see ``wait_ready``)."""
        if self._process is not None and self._process.poll() is None:
            raise TritonStartError("Triton is already running")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return self._process

    def is_ready(self) -> bool:
        """Whether Triton's HTTP readiness probe (strict: every model ready) answers 200."""
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, *, timeout_s: float) -> None:
        """Block until ready; ``TritonStartError`` if Triton exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise TritonStartError(f"Triton exited during startup\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(READY_POLL_INTERVAL_S)
        raise TritonStartError(f"Triton not ready after {timeout_s:.0f} s\n{self.log_tail()}")

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM Triton, wait up to ``grace_s``, then SIGKILL whatever is left of its group."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._process = None

    def log_tail(self) -> str:
        """The end of Triton's log, for error messages."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log kept)"
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launching process dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
