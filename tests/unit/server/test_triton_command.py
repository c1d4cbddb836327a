"""``hetgateway triton``: one embedded Triton replica on an address and ports of its own."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hetgateway.cli import EXIT_STARTUP_FAILED, build_parser, main
from hetgateway.embedded import TritonPorts, TritonProcess


def needs_embedded_extra() -> None:
    """The Triton binary comes with ``hetgateway[embedded]`` (not in ``make test-floor``)."""
    pytest.importorskip("pytriton", reason="the embedded extra (not in make test-floor's venv)")


def test_the_triton_command_takes_an_address_and_three_ports() -> None:
    args = build_parser().parse_args([
        "triton", "--model-repository", "model_repo", "--address", "127.0.0.2",
        "--http-port", "18000", "--grpc-port", "18001", "--metrics-port", "18002",
    ])
    assert (args.command, args.repositories, args.address) == (
        "triton", [Path("model_repo")], "127.0.0.2")
    assert (args.http_port, args.grpc_port, args.metrics_port) == (18000, 18001, 18002)


def test_by_default_a_replica_binds_loopback_on_tritons_ports() -> None:
    args = build_parser().parse_args(["triton"])
    assert args.address == "127.0.0.1"
    assert (args.http_port, args.grpc_port, args.metrics_port) == (8000, 8001, 8002)


def test_triton_binds_every_endpoint_to_the_replica_address(tmp_path: Path) -> None:
    needs_embedded_extra()
    triton = TritonProcess([tmp_path], ports=TritonPorts(18000, 18001, 18002),
                           backend_dir=tmp_path, address="127.0.0.3")
    command = triton.command()
    for endpoint in ("http", "grpc", "metrics"):
        assert f"--{endpoint}-address=127.0.0.3" in command
    assert (triton.http_url, triton.grpc_url, triton.metrics_url) == (
        "127.0.0.3:18000", "127.0.0.3:18001", "127.0.0.3:18002")


@pytest.fixture
def root_logging_restored():
    """``main`` points the root logger at this test's (captured, soon closed) stderr: put the
    handlers back afterwards, so that later tests do not log into a closed stream."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def test_a_missing_repository_ends_the_command_with_a_message(
    tmp_path: Path, capsys, root_logging_restored
) -> None:
    needs_embedded_extra()
    missing = tmp_path / "nowhere"
    assert main(["triton", "--model-repository", str(missing)]) == EXIT_STARTUP_FAILED
    assert "nowhere is not a directory" in capsys.readouterr().err


def test_a_replica_watches_its_repository_like_serve_does() -> None:
    assert build_parser().parse_args(["triton"]).repository_poll == 1.0
    args = build_parser().parse_args(["triton", "--repository-poll", "0"])
    assert args.repository_poll == 0.0


def test_a_replica_runs_explicit_model_control_on_its_own_address(tmp_path: Path) -> None:
    needs_embedded_extra()
    """A replica's Triton takes both: models loadable while it runs (readiness per model) and
    every endpoint on the replica's own address."""
    triton = TritonProcess([tmp_path], ports=TritonPorts(18000, 18001, 18002),
                           backend_dir=tmp_path, address="127.0.0.3",
                           explicit_model_control=True)
    command = triton.command()
    assert "--model-control-mode=explicit" in command and "--strict-readiness=false" in command
    assert "--grpc-address=127.0.0.3" in command


@pytest.mark.parametrize(
    ("argv", "environment", "drain_s"),
    [([], {}, 5.0), ([], {"HETSERVE_TRITON_DRAIN_S": "7"}, 7.0),
     (["--drain", "2"], {"HETSERVE_TRITON_DRAIN_S": "7"}, 2.0), (["--drain", "0"], {}, 0.0)],
)
def test_a_replica_drains_for_the_flag_else_the_setting_else_five_seconds(
    argv, environment, drain_s, monkeypatch, root_logging_restored
) -> None:
    """How long ``hetgateway triton`` keeps Triton serving after SIGTERM (``--drain`` wins over
    ``HETSERVE_TRITON_DRAIN_S``)."""
    from hetgateway.embedded import launcher

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    started: list[dict] = []
    monkeypatch.setattr(launcher, "serve_triton",
                        lambda repositories, **options: started.append(options))
    assert main(["triton", *argv]) == 0
    assert started[0]["drain_s"] == drain_s
