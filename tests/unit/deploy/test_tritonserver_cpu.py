"""``tritonserver-cpu``, the CPU Triton image's command: it takes the repositories to derive
and passes every other flag to the wheel's ``tritonserver`` unchanged."""

from __future__ import annotations

from pathlib import Path

from hetgateway.embedded.triton_process import pytriton_paths
from tritonserver_cpu import parse_args, tritonserver_command

ROOT = Path(__file__).resolve().parents[3]


def test_repositories_and_ort_threads_are_taken_and_the_rest_passed_on_in_order():
    args = parse_args(["--model-repository=/a", "--http-port=8000", "--model-repository", "/b",
                       "--ort-threads=2", "--log-verbose=0"])
    assert args.repositories == (Path("/a"), Path("/b"))
    assert args.ort_threads == 2
    assert args.passthrough == ("--http-port=8000", "--log-verbose=0")


def test_the_command_is_the_wheels_tritonserver_on_the_derived_repository(tmp_path):
    args = parse_args(["--model-repository=" + str(ROOT / "model_repo"), "--grpc-port=8001"])
    command = tritonserver_command(args, tmp_path)
    assert command[0] == str(pytriton_paths().tritonserver)
    assert command[1:] == [f"--model-repository={tmp_path / 'repo'}",
                           f"--backend-directory={tmp_path / 'backends'}", "--grpc-port=8001"]
    derived = sorted(p.name for p in (tmp_path / "repo").iterdir())
    assert derived == ["fashion_det", "fashion_het"]
    config = (tmp_path / "repo" / "fashion_het" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config
    assert (tmp_path / "backends" / "python" / "triton_python_backend_stub").exists()
