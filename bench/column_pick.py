"""How the served head should pick the top classes' sampled columns: by a product with their
one-hot indicator or by a gather (``hetexport.serving.sample_statistics.top_columns``, which
switches at ``PICK_BY_PRODUCT_MAX_WIDTH`` classes).

Exports ``top_columns`` alone to ONNX twice, once forced to each branch (the width limit set
above or below K in this process), and times both in ONNX Runtime, one thread, on the same
softmax samples [B, S, K] and top-k ids, alternating rounds, medians of the per-call times.
Prints one line per shape; writes nothing (the figures are the ones the constant's docstring
and issue 24's note quote).

Reproduce: ``.venv/bin/python bench/column_pick.py`` (seconds).
"""

from __future__ import annotations

import io
import statistics
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from hetexport.serving import sample_statistics

SHAPES = ((10, 128, 1), (10, 128, 32), (32, 128, 32), (1000, 512, 1), (1000, 512, 8))
"""(K, S, B) measured, k = ``TOP_K``."""
TOP_K = 5
ROUNDS = 7
CALLS = 200


class _TopColumns(torch.nn.Module):
    def forward(self, probs_s: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return sample_statistics.top_columns(probs_s, ids)


def session(probs_s: torch.Tensor, ids: torch.Tensor, *, product: bool) -> ort.InferenceSession:
    """``top_columns`` exported with the product branch (``product``) or the gather."""
    classes = probs_s.shape[-1]
    saved = sample_statistics.PICK_BY_PRODUCT_MAX_WIDTH
    sample_statistics.PICK_BY_PRODUCT_MAX_WIDTH = classes if product else classes - 1
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_TopColumns(), (probs_s, ids), buffer, dynamo=False,
                              input_names=["p", "ids"], opset_version=17,
                              dynamic_axes={"p": {0: "B"}, "ids": {0: "B"}})
    finally:
        sample_statistics.PICK_BY_PRODUCT_MAX_WIDTH = saved
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def time_us(runner: ort.InferenceSession, feed: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        runner.run(None, feed)
    return 1e6 * (time.perf_counter() - start) / CALLS


def main() -> int:
    for classes, samples, batch in SHAPES:
        probs_s = torch.softmax(torch.randn(batch, samples, classes, generator=torch.Generator()
                                            .manual_seed(0)), -1)
        ids = torch.topk(probs_s.mean(1), TOP_K, -1).indices
        feed = {"p": probs_s.numpy(), "ids": ids.numpy()}
        runners = {name: session(probs_s, ids, product=name == "product")
                   for name in ("product", "gather")}
        outputs = {name: runner.run(None, feed)[0] for name, runner in runners.items()}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(ROUNDS):
            for name, runner in runners.items():
                times[name].append(time_us(runner, feed))
        product, gather = (statistics.median(times[name]) for name in ("product", "gather"))
        print(f"K {classes:5d} S {samples:4d} B {batch:3d}: product {product:8.1f} us, gather "
              f"{gather:8.1f} us; same bits: "
              f"{np.array_equal(outputs['product'], outputs['gather'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
