"""Trace a ServingGraph to ONNX: one batched graph whose answers do not depend on the batch.

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). On torch 2.13
it traces these heads in well under a second, keeps the noise bank as initializers named
``noise_factors`` / ``noise_diag`` (the dynamo exporter folded ``noise_factors`` into a
constant for the parameter-efficient head) and emits TopK with a dynamic batch. It is
deprecated upstream; the graph uses only plain ops, so moving to ``dynamo=True`` later is a
one-line change checked by the parity tests.

Determinism: the graph runs the whole batch at once, and an image's outputs are still
bit-identical whatever batch it arrives in, at whatever position, with any number of ONNX
Runtime threads. The head is written on kernels that compute every row alike
(``hetexport.layers.batch_invariant``: no ``Log``/``Softplus`` element-wise op, no
``ReduceMean``/``ReduceSum``, whose ONNX Runtime CPU kernels round by position or by batch
shape); the backbone's ``Conv``/``Gemm`` are row-independent. ``check_parity`` verifies it on
every export. (Earlier exports ran a batch-1 graph under ``Scan``, one example at a time, for
the same guarantee; per-node overhead then cost more than the arithmetic.)
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from hetcontract import INPUT_NAME

from hetexport.errors import ExportError
from hetexport.serving.head import OUTPUT_NAMES, ServingGraph

OPSET = 17
_BATCH = "B"
_TRACE_BATCH = 2


def export_graph(graph: ServingGraph, input_shape: tuple[int, int, int]) -> onnx.ModelProto:
    """The ONNX model of ``graph``: input ``images`` [B, C, H, W], outputs HEAD_OUTPUTS, B
    dynamic."""
    graph.eval()
    example = torch.zeros(_TRACE_BATCH, *input_shape)
    dynamic_axes = {INPUT_NAME: {0: _BATCH}, **{name: {0: _BATCH} for name in OUTPUT_NAMES}}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=False,
            )
    except Exception as exc:  # torch raises many types from deep inside tracing
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}") from exc
    return model
