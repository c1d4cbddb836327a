"""Triton Python-backend model running ONNX Runtime on ``<version>/model.onnx``.

Copied as ``model.py`` into each model the embedded launcher derives from an onnxruntime
model: same inputs, outputs, batching and config as the original. The requests Triton's
dynamic batcher hands over in one ``execute`` call are concatenated along the batch axis, run
in one ONNX Runtime call, and split back.

The session is deterministic and uses a fixed number of threads, read from the model
config's parameters ``ort_intra_op_threads`` and ``ort_inter_op_threads`` (default 1).

This file runs inside Triton's Python stub; it imports only numpy, onnxruntime and
``triton_python_backend_utils`` (there at run time).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MODEL_FILENAME = "model.onnx"
INTRA_OP_THREADS_PARAMETER = "ort_intra_op_threads"
INTER_OP_THREADS_PARAMETER = "ort_inter_op_threads"
DEFAULT_THREADS = 1


class TritonPythonModel:
    """ONNX Runtime behind Triton's Python backend."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {
            key: value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(
            parameters.get(INTRA_OP_THREADS_PARAMETER) or DEFAULT_THREADS
        )
        options.inter_op_num_threads = int(
            parameters.get(INTER_OP_THREADS_PARAMETER) or DEFAULT_THREADS
        )
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.use_deterministic_compute = True
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILENAME)
        self._session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = [spec["name"] for spec in config["input"]]
        self._outputs = {
            spec["name"]: (
                pb_utils.triton_string_to_numpy(spec["data_type"]),
                _backend_dims(spec),
            )
            for spec in config["output"]
        }

    def execute(self, requests):
        try:
            requested = [request.requested_output_names() for request in requests]
            feeds, sizes = self._feeds(requests)
            wanted = sorted({name for names in requested for name in names} or set(self._outputs))
            values = self._session.run(wanted, feeds)
        except Exception as exc:  # answered per request, never raised into Triton
            error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return self._responses(requested, dict(zip(wanted, values, strict=True)), sizes)

    def _feeds(self, requests):
        feeds = {}
        sizes = []
        for name in self._input_names:
            arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            if not sizes:
                sizes = [array.shape[0] for array in arrays]
        return feeds, sizes

    def _responses(self, requested, values, sizes):
        responses = []
        start = 0
        for names, size in zip(requested, sizes, strict=True):
            names = names or list(values)
            tensors = []
            for name in names:
                dtype, dims = self._outputs[name]
                part = values[name][start : start + size]
                part = part.reshape((size, *dims)).astype(dtype, copy=False)
                tensors.append(pb_utils.Tensor(name, part))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses


def _backend_dims(spec):
    """The per-item shape the model itself produces: ``reshape`` when given, else ``dims``."""
    reshape = spec.get("reshape")
    dims = reshape.get("shape", []) if reshape is not None else spec.get("dims", [])
    return tuple(int(d) for d in dims)
