"""The shipped demo model's checkpoint recovered from its graph (``bench/demo_checkpoint.py``):
the graph's initializers are the model's weights, the model it gives back answers as the graph
does, and a graph that lacks a weight is refused, nothing written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hetexport.checkpoint import load_checkpoint
from hetexport.onnx.runner import OnnxRunner
from hetexport.serving.head import latent_link

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCH = REPO_ROOT / "bench" / "demo_checkpoint.py"
SHIPPED = REPO_ROOT / "model_repo" / "fashion_het"
GRAPH = SHIPPED / "1" / "model.onnx"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_checkpoint", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))  # its siblings, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH.parent))


def test_the_shipped_graph_gives_back_the_model_it_serves(bench, tmp_path):
    assert bench.main(["--output-dir", str(tmp_path), "--images", "64"]) == 0
    checkpoint = load_checkpoint(tmp_path / "fashion_het.pt")
    images = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        out = checkpoint.model(torch.from_numpy(images))
    ours = latent_link(out.latent.mean, out.temperature, link=checkpoint.model.head.link).numpy()
    np.testing.assert_allclose(ours, OnnxRunner(GRAPH).run(images)["latent_probs"], atol=1e-5)
    weights = bench.graph_weights(GRAPH, checkpoint.model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in checkpoint.model.state_dict().items())


def test_a_graph_without_one_of_the_models_weights_is_refused(bench):
    wanted = {"head.mean_layer.weight": torch.zeros(10, 128),
              "backbone.norm.running_mean": torch.zeros(16)}  # what a folded batch norm leaves
    with pytest.raises(bench.RecoveryError, match="no initializer model.backbone.norm"):
        bench.graph_weights(GRAPH, wanted)


def test_a_weight_of_another_shape_is_refused(bench):
    with pytest.raises(bench.RecoveryError, match="is \\(10, 128\\)"):
        bench.graph_weights(GRAPH, {"head.mean_layer.weight": torch.zeros(12, 128)})
