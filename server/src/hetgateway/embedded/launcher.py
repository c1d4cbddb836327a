"""``hetgateway serve``: embedded Triton on loopback, then the gateway in front of it;
``hetgateway triton``: the embedded Triton alone, one replica on an address of its own.

Both derive a runnable repository in a temporary directory, start Triton (explicit model
control), wait until every model is ready (bounded), restart Triton if it dies
(``embedded.supervisor``) and load new versions and models exported into the source
repositories while it runs (``embedded.repository_watcher``, every ``poll_interval_s``; 0: off);
``serve`` then runs the gateway with uvicorn, ``serve_triton`` waits; on Ctrl-C or SIGTERM
they stop Triton and its process group and remove the temporary directory.

Shutting down: ``serve`` drains the gateway on SIGTERM (``hetgateway.shutdown_drain``), then
stops Triton, whose only client it is. ``serve_triton`` is one replica of a pool that gateways
find through DNS: on SIGTERM it keeps Triton serving for ``drain_s`` (the time for DNS, the
endpoints and every gateway to drop it; a second SIGTERM or Ctrl-C cuts it short), then stops
Triton, which answers what still arrives with "unknown model" (a gateway sends those to
another replica), finishes what is in flight and exits. Triton itself cannot be made to say
"not ready" while it still serves: its readiness turns false only inside its own shutdown,
which unloads the models in the same few milliseconds (measured on Triton 2.51, see
``hetgateway.triton_errors``); so the drain here is a wait, as a Kubernetes ``preStop`` sleep
is, and readiness turns false when it ends. A SIGTERM that arrives while Triton is still
starting stops it at once (nothing can have been sent to it yet).

Typical usage::

    serve([Path("model_repo")], settings=load_settings(port=8080),
          ports=TritonPorts(8000, 8001, 8002))
    serve_triton([Path("model_repo")], address="127.0.0.2", ports=TritonPorts(8000, 8001, 8002),
                 drain_s=5.0)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from hetgateway.embedded.repository import derive_repository
from hetgateway.embedded.repository_watcher import DEFAULT_POLL_INTERVAL_S, RepositoryWatcher
from hetgateway.embedded.supervisor import ProcessSupervisor, SupervisorState
from hetgateway.embedded.triton_process import (
    LOOPBACK,
    STOP_GRACE_S,
    TritonPorts,
    TritonProcess,
    TritonStartError,
    build_backend_dir,
)
from hetgateway.gateway_server import run_gateway
from hetgateway.settings import GatewaySettings

DEFAULT_READY_TIMEOUT_S = 180.0
SUPERVISION_POLL_S = 1.0
DRAIN_POLL_S = 0.1

_LOG = logging.getLogger(__name__)


class Terminated(Exception):
    """SIGTERM arrived; unwinds like Ctrl-C so that Triton is stopped."""


def serve(
    repositories: Sequence[Path],
    *,
    settings: GatewaySettings,
    ports: TritonPorts,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ort_threads: int = 1,
    work_dir: Path | None = None,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
) -> None:
    """Run Triton and the gateway until interrupted; always stops Triton."""
    with _sigterm_raises(), supervised_triton(
        repositories,
        ports=ports,
        ready_timeout_s=ready_timeout_s,
        ort_threads=ort_threads,
        work_dir=work_dir,
        poll_interval_s=poll_interval_s,
    ) as (triton, _):
        gateway_settings = settings.model_copy(
            update={
                "triton_grpc_url": triton.grpc_url,
                "model_repositories": [Path(r).resolve() for r in repositories],
            }
        )
        _LOG.info("gateway on http://%s:%d", settings.host, settings.port)
        run_gateway(gateway_settings)


def serve_triton(
    repositories: Sequence[Path],
    *,
    address: str,
    ports: TritonPorts,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ort_threads: int = 1,
    work_dir: Path | None = None,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    drain_s: float = 0.0,
) -> None:
    """Run the embedded Triton alone on ``address`` until interrupted (Ctrl-C; SIGTERM after
    a drain of ``drain_s``, see the module docstring); ``TritonStartError`` when it does not
    start or its supervisor gives up on it."""
    with _sigterm_raises(), supervised_triton(
        repositories,
        ports=ports,
        address=address,
        ready_timeout_s=ready_timeout_s,
        ort_threads=ort_threads,
        work_dir=work_dir,
        poll_interval_s=poll_interval_s,
    ) as (triton, supervisor):
        _LOG.info("Triton ready: gRPC %s, HTTP %s, metrics %s",
                  triton.grpc_url, triton.http_url, triton.metrics_url)
        try:
            while supervisor.state != SupervisorState.GAVE_UP:
                time.sleep(SUPERVISION_POLL_S)  # a signal's handler raises out of here
        except Terminated:
            _serve_while_draining(supervisor, drain_s=drain_s)
            return
        raise TritonStartError(f"Triton keeps dying; giving up\n{triton.log_tail()}")


def _serve_while_draining(supervisor: ProcessSupervisor, *, drain_s: float) -> None:
    """Let Triton serve on for ``drain_s`` after SIGTERM; a second SIGTERM ends the wait."""
    if drain_s <= 0:
        return
    _LOG.warning("SIGTERM: Triton serves on for %.1f s, then stops", drain_s)
    deadline = time.monotonic() + drain_s
    with contextlib.suppress(Terminated):
        while supervisor.state != SupervisorState.GAVE_UP:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            time.sleep(min(left_s, DRAIN_POLL_S))
    _LOG.info("drain over; stopping Triton")


@contextmanager
def supervised_triton(
    repositories: Sequence[Path],
    *,
    ports: TritonPorts,
    address: str = LOOPBACK,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ort_threads: int = 1,
    work_dir: Path | None = None,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
) -> Iterator[tuple[TritonProcess, ProcessSupervisor]]:
    """Triton on a derived repository (explicit model control), ready and supervised, its
    sources watched every ``poll_interval_s`` (0: not watched), for the ``with`` block;
    stopped (process group included) and its temporary directory removed after it."""
    with tempfile.TemporaryDirectory(prefix="hetserve-", dir=work_dir) as tmp:
        workdir = Path(tmp)
        watcher = RepositoryWatcher(  # its baseline is the sources as they are derived now
            repositories, workdir / "repo", triton_http_url=f"{address}:{ports.http}",
            ort_threads=ort_threads, poll_interval_s=poll_interval_s,
        )
        derived = derive_repository(repositories, workdir / "repo", ort_threads=ort_threads)
        _LOG.info("derived repository %s: %s", derived.path, ", ".join(derived.models))
        triton = TritonProcess(
            [derived.path],
            ports=ports,
            backend_dir=build_backend_dir(workdir / "backends"),
            log_path=workdir / "triton.log",
            explicit_model_control=True,
            address=address,
        )
        with triton:
            _LOG.info("starting Triton (gRPC %s, HTTP %s)", triton.grpc_url, triton.http_url)
            triton.wait_ready(timeout_s=ready_timeout_s)
            supervisor = ProcessSupervisor(triton.start, name="tritonserver")
            supervisor.start(running=triton.process)
            if poll_interval_s > 0:
                watcher.start()
                _LOG.info("watching %s for new models and versions every %.1f s",
                          ", ".join(map(str, repositories)), poll_interval_s)
            try:
                yield triton, supervisor
            finally:
                watcher.stop()
                supervisor.stop(timeout_s=STOP_GRACE_S)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` inside the block (so it unwinds like Ctrl-C)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")
