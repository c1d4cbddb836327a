"""The ``hetgateway`` command.

``hetgateway serve --model-repository model_repo [--model-repository more] --port 8080``
runs the embedded Triton and the gateway; ``hetgateway gateway --triton-url host:8001``
runs the gateway alone in front of an external Triton (docker-compose) or several
(``ipv4:127.0.0.2:8001,127.0.0.3:8001``, ``dns:///name:8001``); ``hetgateway triton
--model-repository model_repo --address 127.0.0.2`` runs one embedded Triton replica alone.
Flags override the ``HETSERVE_*`` environment, which overrides the defaults. ``--workers N``
(``HETSERVE_WORKERS``) serves from N gateway processes; unset, ``gateway`` takes one per usable
core and ``serve`` one per two cores (Triton, on the same machine, needs the others).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hetgateway.embedded.triton_process import LOOPBACK
from hetgateway.logging_config import configure_logging
from hetgateway.settings import GatewaySettings, load_settings

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hetgateway``."""
    parser = argparse.ArgumentParser(
        prog="hetgateway", description="hetserve's HTTP gateway in front of NVIDIA Triton"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="embedded Triton (CPU) and the gateway")
    _embedded_arguments(serve)
    _gateway_arguments(serve)
    serve.add_argument("--triton-http-port", type=int, default=8000)
    serve.add_argument("--triton-grpc-port", type=int, default=8001)
    serve.add_argument("--triton-metrics-port", type=int, default=8002)

    gateway = commands.add_parser("gateway", help="the gateway alone, for an external Triton")
    gateway.add_argument("--triton-url",
                         help="Triton gRPC target: host:port, ipv4:a:p,b:p or dns:///name:port "
                              "(HETSERVE_TRITON_GRPC_URL)")
    gateway.add_argument("--model-repository", action="append", type=Path, dest="repositories",
                         help="repository to read model_card.json from (fallback)")
    _gateway_arguments(gateway)

    triton = commands.add_parser("triton", help="the embedded Triton alone (one replica)")
    _embedded_arguments(triton)
    triton.add_argument("--address", default=LOOPBACK,
                        help="address Triton binds for HTTP, gRPC and metrics (default 127.0.0.1)")
    triton.add_argument("--http-port", type=int, default=8000)
    triton.add_argument("--grpc-port", type=int, default=8001)
    triton.add_argument("--metrics-port", type=int, default=8002)
    triton.add_argument("--log-level", default="info", help="debug, info, warning, error")
    triton.add_argument("--drain", type=float, metavar="SECONDS", dest="drain_s",
                        help="on SIGTERM, seconds Triton serves on before it stops "
                             "(HETSERVE_TRITON_DRAIN_S, default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hetgateway``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "triton":
        configure_logging(level=args.log_level.upper())
        return _triton(args)
    settings = settings_from_args(args)
    if settings.workers is None:
        settings = settings.model_copy(update={"workers": default_workers(args.command)})
    configure_logging(level=settings.log_level.upper())
    if args.command == "serve":
        return _serve(args, settings)
    from hetgateway.gateway_server import run_gateway

    try:
        run_gateway(settings)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _serve(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from hetgateway.embedded.launcher import serve
    from hetgateway.embedded.triton_process import TritonPorts

    ports = TritonPorts(
        http=args.triton_http_port, grpc=args.triton_grpc_port, metrics=args.triton_metrics_port
    )
    return _exit_status(
        lambda: serve(
            args.repositories or [Path("model_repo")],
            settings=settings,
            ports=ports,
            ready_timeout_s=args.ready_timeout,
            ort_threads=args.ort_threads,
            poll_interval_s=args.repository_poll,
        )
    )


def _triton(args: argparse.Namespace) -> int:
    from hetgateway.embedded.launcher import serve_triton
    from hetgateway.embedded.triton_process import TritonPorts

    ports = TritonPorts(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port)
    drain_s = args.drain_s if args.drain_s is not None else load_settings().triton_drain_s
    return _exit_status(
        lambda: serve_triton(
            args.repositories or [Path("model_repo")],
            address=args.address,
            ports=ports,
            ready_timeout_s=args.ready_timeout,
            ort_threads=args.ort_threads,
            poll_interval_s=args.repository_poll,
            drain_s=drain_s,
        )
    )


def _exit_status(run: Callable[[], None]) -> int:
    """Run an embedded-Triton command; its exit status (a failed start: a message and 1)."""
    from hetgateway.embedded.launcher import Terminated
    from hetgateway.embedded.repository import RepositoryError
    from hetgateway.embedded.triton_process import TritonStartError

    try:
        run()
    except (TritonStartError, RepositoryError) as exc:
        print(f"hetgateway: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except (KeyboardInterrupt, Terminated):
        return EXIT_OK
    return EXIT_OK


def _embedded_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", action="append", type=Path, dest="repositories",
                        help="model repository (repeatable); default: model_repo")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for Triton and every model to be ready")
    parser.add_argument("--ort-threads", type=int, default=1,
                        help="ONNX Runtime threads per model instance")
    parser.add_argument("--repository-poll", type=float, default=1.0, metavar="SECONDS",
                        help="look for new models and versions this often and load them "
                             "without a restart; 0: never")


def _gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="gateway bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gateway port (default 8080)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve /metrics on this port of its own, not on --port "
                             "(HETSERVE_METRICS_PORT; default: on --port)")
    parser.add_argument("--default-model", help="model behind POST /v1/predict")
    parser.add_argument("--max-inputs-per-request", type=int, help="most inputs per request")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    parser.add_argument("--max-in-flight", type=int,
                        help="API requests served at once; beyond it 429 (default 256)")
    parser.add_argument("--listen-backlog", type=int,
                        help="connections queued by the kernel before accept (default 2048)")
    parser.add_argument("--limit-concurrency", type=int,
                        help="hard cap on connections and tasks; beyond it 503 (default: none)")
    parser.add_argument("--workers", type=int,
                        help="gateway worker processes (default: gateway, the usable cores; "
                             "serve, half of them)")


def default_workers(command: str) -> int:
    """Gateway workers when none are asked for: every usable core for ``gateway`` (Triton runs
    elsewhere), half of them, at least one, for ``serve`` (Triton shares the machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    return cores if command == "gateway" else max(1, cores // 2)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """The settings the parsed command line asks for: flags win over the environment."""
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "default_model": args.default_model,
        "max_inputs_per_request": args.max_inputs_per_request,
        "log_level": args.log_level,
        "max_in_flight": args.max_in_flight,
        "listen_backlog": args.listen_backlog,
        "limit_concurrency": args.limit_concurrency,
        "workers": args.workers,
        "triton_grpc_url": getattr(args, "triton_url", None),
    }
    if args.command == "gateway" and args.repositories:
        overrides["model_repositories"] = args.repositories
    return load_settings(**{key: value for key, value in overrides.items() if value is not None})


if __name__ == "__main__":
    sys.exit(main())
