"""Derive a model repository the CPU-only embedded Triton can run.

The ``nvidia-pytriton`` wheel's Triton has the Python backend only. Each model whose config
names the ONNX Runtime backend (``platform: "onnxruntime_onnx"`` or ``backend:
"onnxruntime"``) becomes a Python-backend model: the same config (inputs, outputs,
``max_batch_size``, dynamic batching, warmup, the ``model_card`` parameter) with ``backend:
"python"``, CPU instances, no GPU/TensorRT optimisation, ONNX Runtime thread parameters, and
per version a ``model.py`` (``ort_model.py``) beside symlinks to the original ``model.onnx``
(and its external-data files).
Python and ensemble models are copied unchanged.

Typical usage::

    derived = derive_repository([Path("model_repo")], Path("/tmp/x/repo"), ort_threads=1)
    derived.models      # ("fashion_det", "fashion_het")
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

CONFIG_FILENAME = "config.pbtxt"
ONNX_FILENAME = "model.onnx"
PYTHON_MODEL_FILENAME = "model.py"
ORT_MODEL_SOURCE = Path(__file__).with_name("ort_model.py")
ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
PYTHON_BACKEND = "python"
INTRA_OP_THREADS_PARAMETER = "ort_intra_op_threads"
INTER_OP_THREADS_PARAMETER = "ort_inter_op_threads"


class RepositoryError(Exception):
    """A source repository cannot be turned into a runnable one."""


@dataclass(frozen=True)
class DerivedRepository:
    """The derived repository: its path and its models (converted ones and copied ones)."""

    path: Path
    converted: tuple[str, ...]
    copied: tuple[str, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self.converted + self.copied))


def derive_repository(
    sources: Sequence[Path], target: Path, *, ort_threads: int = 1
) -> DerivedRepository:
    """Write a runnable repository for the embedded Triton under ``target`` (created)."""
    target.mkdir(parents=True, exist_ok=True)
    converted: list[str] = []
    copied: list[str] = []
    seen: dict[str, Path] = {}
    for source in sources:
        if not source.is_dir():
            raise RepositoryError(f"model repository {source} is not a directory")
        for model_dir in sorted(p for p in source.iterdir() if (p / CONFIG_FILENAME).is_file()):
            name = model_dir.name
            if name in seen:
                raise RepositoryError(f"model {name!r} is in both {seen[name]} and {source}")
            seen[name] = source
            if derive_model(model_dir, target / name, ort_threads=ort_threads):
                converted.append(name)
            else:
                copied.append(name)
    return DerivedRepository(path=target, converted=tuple(converted), copied=tuple(copied))


def derive_model(model_dir: Path, target: Path, *, ort_threads: int = 1) -> bool:
    """Write one model's runnable form to ``target`` (its directory in the derived
    repository); True when it was converted to the Python backend, False when copied."""
    config = read_config(model_dir / CONFIG_FILENAME)
    if is_onnxruntime_model(config):
        _convert(model_dir, target, config, ort_threads=ort_threads)
        return True
    shutil.copytree(model_dir, target, symlinks=True, dirs_exist_ok=True)
    return False


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt``."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path}: {exc}") from exc
    return config


def is_onnxruntime_model(config: model_config_pb2.ModelConfig) -> bool:
    """Whether Triton would run this model with its ONNX Runtime backend."""
    return config.platform == ONNX_PLATFORM or config.backend == ONNX_BACKEND


def python_backend_config(
    config: model_config_pb2.ModelConfig, *, ort_threads: int
) -> model_config_pb2.ModelConfig:
    """The same model config, run by the Python backend on CPU."""
    derived = model_config_pb2.ModelConfig()
    derived.CopyFrom(config)
    derived.platform = ""
    derived.backend = PYTHON_BACKEND
    derived.ClearField("optimization")
    derived.ClearField("default_model_filename")
    for group in derived.instance_group:
        group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        group.ClearField("gpus")
    for key in (INTRA_OP_THREADS_PARAMETER, INTER_OP_THREADS_PARAMETER):
        if key not in derived.parameters:
            derived.parameters[key].string_value = str(ort_threads)
    return derived


def _convert(
    source: Path, target: Path, config: model_config_pb2.ModelConfig, *, ort_threads: int
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    versions = [p for p in source.iterdir() if p.is_dir() and p.name.isdigit()]
    if not any((v / ONNX_FILENAME).is_file() for v in versions):
        raise RepositoryError(f"{source} has no <version>/{ONNX_FILENAME}")
    for item in source.iterdir():
        if item.is_file() and item.name != CONFIG_FILENAME:
            shutil.copy2(item, target / item.name)
    for version in versions:
        if not (version / ONNX_FILENAME).is_file():
            continue
        out = target / version.name
        out.mkdir(exist_ok=True)
        for item in version.iterdir():  # model.onnx and any external-data files beside it
            link = out / item.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(item.resolve())
        shutil.copy2(ORT_MODEL_SOURCE, out / PYTHON_MODEL_FILENAME)
    derived = python_backend_config(config, ort_threads=ort_threads)
    (target / CONFIG_FILENAME).write_text(text_format.MessageToString(derived), encoding="utf-8")
