"""Bounds in front of the app and behind it: the listen backlog and the connection cap reach
uvicorn from the settings and the command line, and Triton's batching queue stays bounded with
a timeout in the repository the embedded launcher derives."""

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
def test_triton_queue_stays_bounded_with_a_rejecting_timeout_in_the_derived_repository(
    model_dir, tmp_path
):
    source = read_config(model_dir / "config.pbtxt").dynamic_batching.default_queue_policy
    assert source.max_queue_size > 0 and source.default_timeout_microseconds > 0
    derived = derive_repository([MODEL_REPO], tmp_path / "repo")
    derived_config = read_config(derived.path / model_dir.name / "config.pbtxt")
    queue = derived_config.dynamic_batching.default_queue_policy
    assert queue.max_queue_size == source.max_queue_size
    assert queue.default_timeout_microseconds == source.default_timeout_microseconds
    assert queue.timeout_action == REJECT
