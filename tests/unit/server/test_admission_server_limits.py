"""Bounds in front of the app and behind it: the listen backlog and the connection cap reach
uvicorn from the settings and the command line; behind the app the bound is the gateway's
admission gate (the shipped models carry no Triton queue policy), and a queue policy a model
does carry is kept by the repository the embedded launcher derives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hetgateway.cli import build_parser, settings_from_args
from hetgateway.embedded.repository import derive_repository, read_config
from hetgateway.gateway_server import uvicorn_config
from hetgateway.settings import DEFAULT_LISTEN_BACKLOG, load_settings
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parents[3]
MODEL_REPO = ROOT / "model_repo"
REJECT = model_config_pb2.ModelQueuePolicy.REJECT


def _shipped_models() -> list[Path]:
    return sorted(p.parent for p in MODEL_REPO.glob("*/config.pbtxt"))


def test_uvicorn_gets_the_backlog_and_no_connection_cap_by_default():
    config = uvicorn_config(load_settings())
    assert config.backlog == DEFAULT_LISTEN_BACKLOG
    assert config.limit_concurrency is None


def test_backlog_and_connection_cap_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HETSERVE_LISTEN_BACKLOG", "128")
    monkeypatch.setenv("HETSERVE_LIMIT_CONCURRENCY", "300")
    config = uvicorn_config(load_settings())
    assert (config.backlog, config.limit_concurrency) == (128, 300)


@pytest.mark.parametrize("command", [["gateway"], ["serve", "--model-repository", "m"]])
def test_command_line_flags_set_the_admission_and_server_bounds(command):
    args = build_parser().parse_args(
        [*command, "--max-in-flight", "8", "--listen-backlog", "64", "--limit-concurrency", "99"]
    )
    settings = settings_from_args(args)
    assert (settings.max_in_flight, settings.listen_backlog, settings.limit_concurrency) == (
        8, 64, 99
    )


@pytest.mark.parametrize("field", ["listen_backlog", "limit_concurrency", "max_in_flight"])
def test_bounds_below_one_are_refused(field):
    with pytest.raises(ValueError, match=field):
        load_settings(**{field: 0})


@pytest.mark.skipif(not _shipped_models(), reason="model_repo/ holds no model")
@pytest.mark.parametrize("model_dir", _shipped_models(), ids=lambda p: p.name)
def test_shipped_models_leave_the_bound_to_the_gateway_not_to_a_triton_queue_policy(model_dir):
    """Triton 2.51 stalls queued requests for 0.5 s when a model has any queue policy
    (``hetexport.repo.config.QueuePolicy``), so the shipped models have none and the gateway's
    admission gate is the bound on the work in flight."""
    batching = read_config(model_dir / "config.pbtxt").dynamic_batching
    assert not batching.HasField("default_queue_policy")
    assert 0 < load_settings().max_in_flight <= 1024


def test_a_queue_policy_a_model_does_have_survives_into_the_derived_repository(tmp_path):
    source = tmp_path / "src"
    model = source / "bounded"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"onnx")
    (model / "config.pbtxt").write_text(
        'name: "bounded"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "images" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] } ]\n'
        'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
        "dynamic_batching { default_queue_policy { timeout_action: REJECT "
        "default_timeout_microseconds: 5000000 max_queue_size: 256 } }\n"
    )
    derived = derive_repository([source], tmp_path / "repo")
    queue = read_config(derived.path / "bounded" / "config.pbtxt").dynamic_batching
    queue = queue.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (256, 5_000_000)
    assert queue.timeout_action == REJECT
