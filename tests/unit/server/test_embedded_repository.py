"""The embedded launcher derives a repository the CPU-only Triton can run: each ONNX Runtime
model becomes a Python-backend model on the same model.onnx with the same config; python and
ensemble models pass through unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hetgateway.embedded.repository import (
    ORT_MODEL_SOURCE,
    RepositoryError,
    derive_repository,
    read_config,
)
from tritonclient.grpc import model_config_pb2

ONNX_CONFIG = """
name: "het"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [ { name: "images" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] } ]
output [
  { name: "topk_ids" data_type: TYPE_INT64 dims: [ 5 ] },
  { name: "predictive_entropy" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } }
]
dynamic_batching { max_queue_delay_microseconds: 200 default_queue_policy { max_queue_size: 64 } }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
parameters { key: "model_card" value: { string_value: "{\\"name\\": \\"het\\"}" } }
"""
PYTHON_CONFIG = 'name: "pre"\nbackend: "python"\nmax_batch_size: 8\n'
ENSEMBLE_CONFIG = 'name: "ens"\nplatform: "ensemble"\nmax_batch_size: 8\n'


def write_model(repo: Path, name: str, config: str, files: dict[str, str]) -> Path:
    model = repo / name
    model.mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    for relative, text in files.items():
        (model / relative).parent.mkdir(parents=True, exist_ok=True)
        (model / relative).write_text(text)
    return model


@pytest.fixture
def source(tmp_path: Path) -> Path:
    repo = tmp_path / "model_repo"
    write_model(repo, "het", ONNX_CONFIG, {"1/model.onnx": "onnx bytes", "1/model.onnx.data":
                                           "weights", "model_card.json": "{}",
                                           "labels.txt": "a\n"})
    write_model(repo, "pre", PYTHON_CONFIG, {"1/model.py": "# python model"})
    write_model(repo, "ens", ENSEMBLE_CONFIG, {"1/.keep": ""})
    (repo / "not_a_model").mkdir()
    return repo


def test_onnx_models_become_python_backend_models_with_the_same_tensors_and_batching(
    source: Path, tmp_path: Path
):
    derived = derive_repository([source], tmp_path / "derived", ort_threads=2)
    assert derived.converted == ("het",)
    original, config = read_config(source / "het" / "config.pbtxt"), read_config(
        derived.path / "het" / "config.pbtxt")
    assert (config.backend, config.platform) == ("python", "")
    assert config.max_batch_size == original.max_batch_size == 32
    assert config.input == original.input and config.output == original.output
    assert config.dynamic_batching == original.dynamic_batching
    assert config.parameters["model_card"].string_value == '{"name": "het"}'
    assert config.parameters["ort_intra_op_threads"].string_value == "2"
    assert config.parameters["ort_inter_op_threads"].string_value == "2"
    assert not config.HasField("optimization")
    assert [(g.count, g.kind, list(g.gpus)) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU, [])]


def test_the_derived_model_runs_the_original_onnx_file_through_the_generic_model_py(
    source: Path, tmp_path: Path
):
    derived = derive_repository([source], tmp_path / "derived")
    version = derived.path / "het" / "1"
    assert (version / "model.onnx").resolve() == (source / "het" / "1" / "model.onnx").resolve()
    assert (version / "model.onnx.data").read_text() == "weights"
    assert (version / "model.py").read_text() == ORT_MODEL_SOURCE.read_text()
    assert (derived.path / "het" / "model_card.json").is_file()


def test_python_and_ensemble_models_are_copied_unchanged(source: Path, tmp_path: Path):
    derived = derive_repository([source], tmp_path / "derived")
    assert sorted(derived.copied) == ["ens", "pre"]
    assert derived.models == ("ens", "het", "pre")
    for name in ("ens", "pre"):
        assert (derived.path / name / "config.pbtxt").read_text() == (
            source / name / "config.pbtxt").read_text()
    assert (derived.path / "pre" / "1" / "model.py").read_text() == "# python model"


def test_several_repositories_merge_and_a_model_in_two_of_them_is_an_error(
    source: Path, tmp_path: Path
):
    more = tmp_path / "more"
    write_model(more, "other", PYTHON_CONFIG, {"1/model.py": ""})
    assert "other" in derive_repository([source, more], tmp_path / "a").models
    write_model(more, "het", PYTHON_CONFIG, {"1/model.py": ""})
    with pytest.raises(RepositoryError, match="het"):
        derive_repository([source, more], tmp_path / "b")


def test_unusable_sources_are_refused_with_a_clear_message(tmp_path: Path):
    with pytest.raises(RepositoryError, match="not a directory"):
        derive_repository([tmp_path / "missing"], tmp_path / "x")
    repo = tmp_path / "repo"
    write_model(repo, "het", ONNX_CONFIG, {})
    with pytest.raises(RepositoryError, match="model.onnx"):
        derive_repository([repo], tmp_path / "y")
    write_model(repo, "bad", "this is { not pbtxt", {})
    with pytest.raises(RepositoryError, match="bad"):
        derive_repository([repo], tmp_path / "z")
