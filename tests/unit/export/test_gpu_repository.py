"""`hetexport gpu-repo`: the GPU copy of the shipped model repository for docker-compose."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from hetexport.cli import app
from hetexport.repo.pbtxt import parse_config
from typer.testing import CliRunner

MODEL_REPO = Path(__file__).resolve().parents[3] / "model_repo"
SHIPPED = sorted(p.name for p in MODEL_REPO.iterdir() if (p / "config.pbtxt").is_file())


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHIPPED:
        pytest.skip("model_repo holds no model; run `make models`")
    target = tmp_path_factory.mktemp("gpu") / "model_repo_cuda"
    result = CliRunner().invoke(app, ["gpu-repo", str(MODEL_REPO), str(target)])
    assert result.exit_code == 0, result.output
    return target


@pytest.mark.parametrize("name", SHIPPED)
def test_every_onnx_model_moves_to_the_gpu_with_tensorrt(gpu_repo: Path, name: str) -> None:
    cpu = parse_config((MODEL_REPO / name / "config.pbtxt").read_text())
    gpu = parse_config((gpu_repo / name / "config.pbtxt").read_text())
    assert {g.kind for g in cpu.instance_groups} == {"KIND_CPU"}
    assert {g.kind for g in gpu.instance_groups} == {"KIND_GPU"}
    assert [a.name for a in gpu.gpu_accelerators] == ["tensorrt"]


@pytest.mark.parametrize("name", SHIPPED)
def test_everything_but_the_placement_stays_the_same(gpu_repo: Path, name: str) -> None:
    cpu = parse_config((MODEL_REPO / name / "config.pbtxt").read_text())
    gpu = parse_config((gpu_repo / name / "config.pbtxt").read_text())
    assert (gpu.inputs, gpu.outputs, gpu.max_batch_size, gpu.dynamic_batching, gpu.parameters) == (
        cpu.inputs, cpu.outputs, cpu.max_batch_size, cpu.dynamic_batching, cpu.parameters)
    for relative in ("1/model.onnx", "model_card.json", "labels.txt"):
        assert filecmp.cmp(MODEL_REPO / name / relative, gpu_repo / name / relative, shallow=False)


def test_an_existing_target_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    if not SHIPPED:
        pytest.skip("model_repo holds no model")
    result = CliRunner().invoke(app, ["gpu-repo", str(MODEL_REPO), str(tmp_path)])
    assert result.exit_code == 1
    assert "exists" in result.output and "Traceback" not in result.output


def test_a_directory_without_models_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gpu-repo", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "holds no model" in result.output
