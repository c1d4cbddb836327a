"""Triton Python-backend models of the GPU ensemble (``hetexport.fused.ensemble``).

* ``McHeadModel``: the MC head. Inputs arrive as DLPack views (on the GPU when Triton
  placed them there: the config sets ``FORCE_CPU_ONLY_INPUT_TENSORS = "no"``), requests of one
  batch are concatenated, the fused kernel runs once, and outputs leave as DLPack tensors on
  the same device. Without CUDA it runs on CPU with the engine the config's ``mc_impl``
  parameter names (``auto`` = the PyTorch fallback; ``triton`` = the kernel in the interpreter).

The generated ``model.py`` files only import these classes as ``TritonPythonModel``;
``triton_python_backend_utils`` exists only inside Triton's stub, so it is imported there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import dlpack

from hetexport.fused.served_head import HEAD_CONSTANTS_FILENAME, OUTPUT_DTYPES, ServedHead

MC_IMPL_PARAMETER = "mc_impl"


def _parameters(args: dict[str, Any]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _version_dir(args: dict[str, Any]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def instance_device(args: dict[str, Any]) -> torch.device:
    """cuda:<id> for a GPU instance when CUDA is usable, else the CPU."""
    if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
        return torch.device(f"cuda:{args.get('model_instance_device_id', 0)}")
    return torch.device("cpu")


class McHeadModel:
    """Triton Python-backend model: latent parameters -> ``hetcontract.HEAD_OUTPUTS``."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        self.device = instance_device(args)
        impl = _parameters(args).get(MC_IMPL_PARAMETER, "auto")
        self.head = ServedHead.load(_version_dir(args) / HEAD_CONSTANTS_FILENAME,
                                    device=self.device, impl=impl)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        names = self.head.constants.latent_names
        per_request = [
            {name: self._to_torch(pb.get_input_tensor_by_name(request, name)) for name in names}
            for request in requests
        ]
        sizes = [inputs[names[0]].shape[0] for inputs in per_request]
        batch = {name: _concat([inputs[name] for inputs in per_request]) for name in names}
        result = self.head.run(batch)  # the contract's outputs (the optional ones: not here)
        outputs = {name: getattr(result, name).to(dtype) for name, dtype in OUTPUT_DTYPES.items()}
        responses = []
        for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True):
            tensors = [self._to_pb(name, value[start:start + size])
                       for name, value in outputs.items()]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def _to_torch(self, tensor: Any) -> torch.Tensor:
        if tensor.is_cpu():
            return torch.from_numpy(tensor.as_numpy()).to(self.device)
        return dlpack.from_dlpack(tensor.to_dlpack()).to(self.device)

    def _to_pb(self, name: str, value: torch.Tensor) -> Any:
        if value.is_cuda:
            return self._pb.Tensor.from_dlpack(name, dlpack.to_dlpack(value.contiguous()))
        return self._pb.Tensor(name, value.contiguous().numpy())

    def finalize(self) -> None:
        self.head = None


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The requests' tensors as one batch (no copy for a single request)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
