"""Run an exported model with ONNX Runtime, with input checks and named outputs.

Typical usage::

    runner = OnnxRunner("model_repo/fashion_het/1/model.onnx")
    out = runner.run(images)              # dict: output name -> np.ndarray
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from hetcontract import INPUT_NAME

from hetexport.validation import validate_images


class OnnxRunner:
    """An ONNX Runtime CPU session over an exported HET graph.

    ``intra_op_threads`` fixes the thread count (0 = ONNX Runtime's choice).
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, *, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        source = str(model) if isinstance(model, (str, Path)) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in shape[1:])  # type: ignore[assignment]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images float32 [B, C, H, W] -> every output by name; InputError on a bad batch."""
        validate_images(images, input_shape=self.input_shape)
        values = self.session.run(
            None, {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)}
        )
        return dict(zip(self.output_names, values, strict=True))
