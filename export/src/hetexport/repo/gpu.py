"""A GPU copy of a CPU model repository, for the Triton container of docker-compose.

Typical usage::

    from hetexport.repo.gpu import write_gpu_repository
    write_gpu_repository(Path("model_repo"), Path("model_repo_cuda"))

Every onnxruntime model is copied with its ``config.pbtxt`` rewritten by
``render_config(..., gpu=True)``: instances on ``KIND_GPU`` and the onnxruntime backend's CUDA
execution provider with the TensorRT accelerator. Other models and every other file are copied
as they are, so the model cards and the ONNX graphs stay byte-identical.
"""

from __future__ import annotations

from pathlib import Path

from hetexport.errors import RepositoryError
from hetexport.repo.config import BACKEND as ONNXRUNTIME_BACKEND
from hetexport.repo.layout import CONFIG_FILENAME, read_files, write_model_dir
from hetexport.repo.pbtxt import parse_config, render_config


def write_gpu_repository(source: Path, target: Path) -> list[str]:
    """Copy the repository ``source`` to ``target`` with GPU configs; returns the models moved
    to the GPU. ``target`` must not exist (nothing is overwritten)."""
    model_dirs = sorted(p for p in Path(source).iterdir() if (p / CONFIG_FILENAME).is_file())
    if not model_dirs:
        raise RepositoryError(f"{source} holds no model (no */{CONFIG_FILENAME})")
    if Path(target).exists():
        raise RepositoryError(f"{target} exists; choose a new directory")
    on_gpu = []
    for model_dir in model_dirs:
        files = read_files(model_dir)
        config = parse_config(files[CONFIG_FILENAME].decode())
        if config.backend == ONNXRUNTIME_BACKEND:
            files[CONFIG_FILENAME] = render_config(config, gpu=True).encode()
            on_gpu.append(config.name)
        write_model_dir(Path(target), model_dir.name, files)
    return on_gpu
