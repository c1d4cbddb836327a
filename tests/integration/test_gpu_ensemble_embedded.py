"""The GPU ensemble (ONNX backbone -> Python-backend fused MC head) loads in the embedded CPU
Triton and answers what the ONNX model answers, within 1e-5 on probabilities.

The repository is written exactly as for the GPU (the backbone on the onnxruntime backend) and
served the way `hetgateway serve` serves any repository: the embedded launcher derives a
runnable one, turning the onnxruntime backbone into its ONNX Runtime Python-backend model. The
head is the same generated model as on the GPU, running the kernel in the triton interpreter
(``mc_impl="triton"``) since there is no CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.http as tritonclient_http
from hetcontract import HEAD_OUTPUTS
from hetexport.fused.ensemble import HEAD_MODEL_NAME, write_gpu_ensemble
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import DEFAULT_BANK_DESIGN
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.graph import export_graph
from hetexport.onnx.runner import OnnxRunner
from hetexport.serving.head import ServingGraph

pytestmark = pytest.mark.integration

PROB_ATOL = 1e-5
ENTROPY_ATOL = 1e-4
SAMPLES, TOP_K, NUM_CONFUSABLE = 200, 5, 3


@pytest.fixture(scope="module")
def served(tmp_path_factory, start_triton):
    """An untrained HET model written as fashion_het (ONNX) and as the GPU ensemble, the
    latter served by a real tritonserver process."""
    root = tmp_path_factory.mktemp("gpu_ensemble")
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=10, head="het", num_factors=3, temperature=1.5,
                     eval_mc_samples=SAMPLES, labels=tuple(f"c{k}" for k in range(10)))
    model = build_model(spec).eval()
    noise = NoiseBank.fixed(SAMPLES, 3, 10, seed=5, design=DEFAULT_BANK_DESIGN)
    graph = ServingGraph(model, noise=noise, top_k=TOP_K, num_confusable=NUM_CONFUSABLE)
    reference = OnnxRunner(export_graph(graph, (1, 28, 28)).SerializeToString())
    # the same bank as the ONNX model: NoiseBank.fixed(..., seed=5), the exporter's design
    written = write_gpu_ensemble(model, root / "model_repo_gpu", mc_samples=SAMPLES, top_k=TOP_K,
                                 num_confusable=NUM_CONFUSABLE, mc_impl="triton", seed=5)
    triton = start_triton([root / "model_repo_gpu"])
    client = tritonclient_http.InferenceServerClient(triton.http_url)
    try:
        yield client, reference, written
    finally:
        client.close()
        triton.stop()


def infer(client, name: str, images: np.ndarray) -> dict[str, np.ndarray]:
    tensor = tritonclient_http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    outputs = [tritonclient_http.InferRequestedOutput(s.name.value) for s in HEAD_OUTPUTS]
    result = client.infer(name, [tensor], outputs=outputs)
    return {s.name.value: result.as_numpy(s.name.value) for s in HEAD_OUTPUTS}


def test_ensemble_and_fused_head_model_are_ready(served):
    client, _, written = served
    assert client.is_model_ready(written.card.name)
    assert client.is_model_ready(HEAD_MODEL_NAME)
    config = client.get_model_config(written.card.name)
    assert config["platform"] == "ensemble"
    assert '"fashion_het_gpu"' in config["parameters"]["model_card"]["string_value"]


@pytest.mark.parametrize("batch", [1, 4])
def test_ensemble_answers_what_the_onnx_model_answers(served, batch):
    client, reference, written = served
    images = np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    got = infer(client, written.card.name, images)
    want = reference.run(images)
    np.testing.assert_allclose(got["probs"], want["probs"], atol=PROB_ATOL, rtol=0)
    np.testing.assert_array_equal(got["topk_ids"], want["topk_ids"])
    np.testing.assert_array_equal(got["confusable_ids"], want["confusable_ids"])
    for name in ("topk_probs", "topk_correlation", "confusable_share"):
        np.testing.assert_allclose(got[name], want[name], atol=PROB_ATOL, rtol=0, err_msg=name)
    for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
        np.testing.assert_allclose(got[name].reshape(batch), want[name].reshape(batch),
                                   atol=ENTROPY_ATOL, rtol=0, err_msg=name)
    assert got["topk_ids"].dtype == np.int64 and got["probs"].shape == (batch, 10)
