"""Trace a ServingGraph to ONNX, batched or per example (bit-identical across batch sizes).

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). On torch 2.13
it traces these heads in well under a second, keeps the noise bank as initializers named
``noise_factors`` / ``noise_diag`` (the dynamo exporter folded ``noise_factors`` into a
constant for the parameter-efficient head) and emits TopK with a dynamic batch. It is
deprecated upstream; the graph uses only plain ops, so moving to ``dynamo=True`` later is a
one-line change checked by the parity tests.

Layouts:

* ``per_example`` (default): the traced batch-1 graph becomes the body of an ONNX ``Scan``
  over the batch axis. Every example then runs exactly the same kernels on the same shapes,
  so an image's outputs are bit-identical whatever batch it arrives in (ONNX Runtime's CPU
  kernels otherwise differ by batch: vectorised vs scalar tails of element-wise ops such as
  Softplus, and the blocking of ReduceMean over the sample axis, changed results by ~1e-7).
* ``batched``: one graph over [B, ...], faster on GPUs (TensorRT does not run Scan), equal to
  the per-example graph within ~1e-6 but not bit-identical across batch sizes.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import onnx
import torch
from hetcontract import INPUT_NAME
from onnx import TensorProto, helper

from hetexport.errors import ExportError
from hetexport.onnx.head import OUTPUT_NAMES, ServingGraph

OPSET = 17
Layout = Literal["per_example", "batched"]
_BATCH = "B"
_AXIS0 = "hetexport_axis0"
_IMAGE_ONE = "hetexport_image"
_IMAGE_BATCH1 = "hetexport_image_batch1"


def export_graph(
    graph: ServingGraph, input_shape: tuple[int, int, int], *, layout: Layout = "per_example"
) -> onnx.ModelProto:
    """The ONNX model of ``graph``: input ``images`` [B, C, H, W], outputs HEAD_OUTPUTS."""
    graph.eval()
    if layout == "batched":
        return _trace(graph, input_shape, dynamic_batch=True)
    if layout == "per_example":
        return _scan_over_batch(_trace(graph, input_shape, dynamic_batch=False), input_shape)
    raise ExportError(f"layout must be 'per_example' or 'batched', got {layout!r}")


def _trace(
    graph: ServingGraph, input_shape: tuple[int, int, int], *, dynamic_batch: bool
) -> onnx.ModelProto:
    example = torch.zeros(2 if dynamic_batch else 1, *input_shape)
    dynamic_axes = (
        {INPUT_NAME: {0: _BATCH}, **{name: {0: _BATCH} for name in OUTPUT_NAMES}}
        if dynamic_batch
        else None
    )
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
    return onnx.load_from_string(buffer.getvalue())


def _scan_over_batch(inner: onnx.ModelProto, input_shape: tuple[int, int, int]) -> onnx.ModelProto:
    """Wrap a batch-1 graph in ``Scan``: [B, C, H, W] -> B runs of the body -> [B, ...]."""
    body_graph = inner.graph
    renamed = {
        INPUT_NAME: _IMAGE_BATCH1,
        **{o.name: f"hetexport_{o.name}_batch1" for o in body_graph.output},
    }
    for node in body_graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    axis0 = helper.make_tensor("axis0", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Constant", [], [_AXIS0], value=axis0),
        helper.make_node("Unsqueeze", [_IMAGE_ONE, _AXIS0], [_IMAGE_BATCH1]),
        *body_graph.node,
    ]
    body_outputs, graph_outputs = [], []
    for out in body_graph.output:
        tensor_type = out.type.tensor_type
        dims = [d.dim_value for d in tensor_type.shape.dim][1:]
        one = f"hetexport_{out.name}_one"
        nodes.append(helper.make_node("Squeeze", [renamed[out.name], _AXIS0], [one]))
        body_outputs.append(helper.make_tensor_value_info(one, tensor_type.elem_type, dims))
        graph_outputs.append(
            helper.make_tensor_value_info(out.name, tensor_type.elem_type, [_BATCH, *dims])
        )
    body = helper.make_graph(
        nodes,
        "per_example_head",
        [helper.make_tensor_value_info(_IMAGE_ONE, TensorProto.FLOAT, list(input_shape))],
        body_outputs,
    )
    scan = helper.make_node(
        "Scan", [INPUT_NAME], [o.name for o in body_graph.output], num_scan_inputs=1, body=body
    )
    main = helper.make_graph(
        [scan],
        "hetexport",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [_BATCH, *input_shape])],
        graph_outputs,
        initializer=list(body_graph.initializer),
    )
    model = helper.make_model(
        main, opset_imports=list(inner.opset_import), producer_name="hetexport"
    )
    model.ir_version = inner.ir_version
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the per-example ONNX graph is invalid: {exc}") from exc
    return model
