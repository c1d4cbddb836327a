"""A GPU copy of a CPU model repository, for the Triton container of docker-compose.

Typical usage::

    from hetexport.gpu_repository import write_gpu_repository
    write_gpu_repository(Path("model_repo"), Path("model_repo_cuda"))

Every onnxruntime model is copied with its ``config.pbtxt`` rewritten by
``repository.render_config(..., gpu=True)``: instances on ``KIND_GPU`` and the onnxruntime
backend's CUDA execution provider with the TensorRT accelerator. Other models and every other
file are copied as they are, so the model cards and the ONNX graphs stay byte-identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hetexport.errors import HetExportError
from hetexport.repository import BACKEND as ONNXRUNTIME_BACKEND
from hetexport.repository import CONFIG_FILENAME, parse_config, render_config


def write_gpu_repository(source: Path, target: Path) -> list[str]:
    """Copy the repository ``source`` to ``target`` with GPU configs; returns the models moved
    to the GPU. ``target`` must not exist (nothing is overwritten)."""
    model_dirs = sorted(p for p in Path(source).iterdir() if (p / CONFIG_FILENAME).is_file())
    if not model_dirs:
        raise HetExportError(f"{source} holds no model (no */{CONFIG_FILENAME})")
    if Path(target).exists():
        raise HetExportError(f"{target} exists; choose a new directory")
    shutil.copytree(source, target)
    on_gpu = []
    for model_dir in model_dirs:
        config_path = Path(target) / model_dir.name / CONFIG_FILENAME
        config = parse_config(config_path.read_text())
        if config.backend == ONNXRUNTIME_BACKEND:
            config_path.write_text(render_config(config, gpu=True))
            on_gpu.append(config.name)
    return on_gpu
