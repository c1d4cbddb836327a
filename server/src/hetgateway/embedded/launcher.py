"""``hetgateway serve``: embedded Triton on loopback, then the gateway in front of it.

Derives a runnable repository in a temporary directory, starts Triton (explicit model
control), waits until every model is ready (bounded), restarts Triton if it dies
(``embedded.supervisor``), loads new versions and models exported into the source
repositories while it runs (``embedded.repository_watcher``, every ``poll_interval_s``; 0: off),
runs the gateway with uvicorn until Ctrl-C or SIGTERM, then stops Triton and its process group
and removes the temporary directory.

Typical usage::

    serve([Path("model_repo")], settings=load_settings(port=8080),
          ports=TritonPorts(8000, 8001, 8002))
"""

from __future__ import annotations

import logging
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from hetgateway.embedded.repository import derive_repository
from hetgateway.embedded.repository_watcher import DEFAULT_POLL_INTERVAL_S, RepositoryWatcher
from hetgateway.embedded.supervisor import ProcessSupervisor
from hetgateway.embedded.triton_process import (
    LOOPBACK,
    STOP_GRACE_S,
    TritonPorts,
    TritonProcess,
    build_backend_dir,
)
from hetgateway.gateway_server import run_gateway
from hetgateway.settings import GatewaySettings

DEFAULT_READY_TIMEOUT_S = 180.0

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
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with tempfile.TemporaryDirectory(prefix="hetserve-", dir=work_dir) as tmp:
            workdir = Path(tmp)
            watcher = RepositoryWatcher(  # its baseline is the sources as they are derived now
                repositories, workdir / "repo", triton_http_url=f"{LOOPBACK}:{ports.http}",
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
            )
            with triton:
                _LOG.info("starting Triton (gRPC %s, HTTP %s)", triton.grpc_url, triton.http_url)
                triton.wait_ready(timeout_s=ready_timeout_s)
                gateway_settings = settings.model_copy(
                    update={
                        "triton_grpc_url": triton.grpc_url,
                        "model_repositories": [Path(r).resolve() for r in repositories],
                    }
                )
                _LOG.info("gateway on http://%s:%d", settings.host, settings.port)
                supervisor = ProcessSupervisor(triton.start, name="tritonserver")
                supervisor.start(running=triton.process)
                if poll_interval_s > 0:
                    watcher.start()
                    _LOG.info("watching %s for new models and versions every %.1f s",
                              ", ".join(map(str, repositories)), poll_interval_s)
                try:
                    run_gateway(gateway_settings)
                finally:
                    watcher.stop()
                    supervisor.stop(timeout_s=STOP_GRACE_S)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")
