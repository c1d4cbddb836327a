"""The shipped ``model_repo_gpu/`` answers like the shipped ``fashion_het``.

``model_repo_gpu/`` is generated from the checkpoint ``fashion_het`` was exported from, with
its noise bank (``make models``); nothing else checks that the two still agree after either is
re-exported. Here the shipped GPU repository, as it is on disk except for the head's engine
(``mc_impl`` set to ``triton``: the fused kernel, in the triton interpreter since there is no
CUDA), is served by a real embedded CPU Triton and asked about real Fashion-MNIST test images;
its answers must be ``fashion_het``'s from ONNX Runtime within 1e-5 on probabilities, with the
same top-k and confusable classes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as tritonclient_http
from hetcontract import HEAD_OUTPUTS, INPUT_NAME, MODEL_CARD_FILENAME, WITHHELD_SHARE, ModelCard
from hetexport.onnx.runner import OnnxRunner
from hetexport.repo.pbtxt import parse_config, render_config

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_GPU = REPO_ROOT / "model_repo_gpu"
SHIPPED_ONNX = REPO_ROOT / "model_repo" / "fashion_het"
ENSEMBLE, HEAD = "fashion_het_gpu", "het_mc_head"
MC_IMPL = "mc_impl"
PROB_ATOL = 1e-5
ENTROPY_ATOL = 1e-4
NUM_IMAGES = 8


@pytest.fixture(scope="module")
def gpu_client(tmp_path_factory, start_triton):
    """The shipped GPU repository, head on the kernel, in a real embedded Triton."""
    root = tmp_path_factory.mktemp("shipped_gpu")
    copy = root / "model_repo_gpu"
    shutil.copytree(SHIPPED_GPU, copy)
    head_config = copy / HEAD / "config.pbtxt"
    config = parse_config(head_config.read_text())
    assert config.parameter(MC_IMPL) == "auto", "the shipped head picks its engine itself"
    head_config.write_text(render_config(config.with_parameter(MC_IMPL, "triton")))
    triton = start_triton([copy])
    client = tritonclient_http.InferenceServerClient(triton.http_url)
    try:
        yield client
    finally:
        client.close()
        triton.stop()


@pytest.fixture(scope="module")
def images(fashion_mnist) -> np.ndarray:
    """The first test images of each class, preprocessed as fashion_het's card says."""
    card = ModelCard.model_validate_json((SHIPPED_ONNX / MODEL_CARD_FILENAME).read_text())
    first = [int(np.flatnonzero(fashion_mnist.labels == k)[0]) for k in range(NUM_IMAGES)]
    pixels = fashion_mnist.images[first].astype(np.float32)[:, None]
    spec = card.input
    return ((pixels / spec.scale - spec.mean[0]) / spec.std[0]).astype(np.float32)


def infer(client, images: np.ndarray) -> dict[str, np.ndarray]:
    tensor = tritonclient_http.InferInput(INPUT_NAME, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    outputs = [tritonclient_http.InferRequestedOutput(s.name.value) for s in HEAD_OUTPUTS]
    result = client.infer(ENSEMBLE, [tensor], outputs=outputs)
    return {s.name.value: result.as_numpy(s.name.value) for s in HEAD_OUTPUTS}


def test_the_shipped_gpu_repository_serves_the_kernel_head_behind_the_ensemble(gpu_client):
    assert gpu_client.is_model_ready(ENSEMBLE) and gpu_client.is_model_ready(HEAD)
    config = gpu_client.get_model_config(HEAD)
    assert config["parameters"]["mc_impl"]["string_value"] == "triton"


@pytest.mark.parametrize("batch", [1, NUM_IMAGES])
def test_the_shipped_gpu_repository_answers_like_fashion_het(gpu_client, images, batch):
    got = infer(gpu_client, images[:batch])
    want = OnnxRunner(SHIPPED_ONNX / "1" / "model.onnx").run(images[:batch])
    np.testing.assert_allclose(got["probs"], want["probs"], atol=PROB_ATOL, rtol=0)
    np.testing.assert_array_equal(got["topk_ids"], want["topk_ids"])
    np.testing.assert_array_equal(got["confusable_ids"], want["confusable_ids"])
    for name in ("topk_probs", "topk_correlation"):
        np.testing.assert_allclose(got[name], want[name], atol=PROB_ATOL, rtol=0, err_msg=name)
    got_share, want_share = got["confusable_share"], want["confusable_share"]
    if _exported_before_withholding():
        # The GPU head is code, the ONNX head is baked: a fashion_het exported before shares
        # could be withheld serves every share; compare those the GPU head still serves.
        served = got_share != WITHHELD_SHARE
        got_share, want_share = got_share[served], want_share[served]
    np.testing.assert_allclose(got_share, want_share, atol=PROB_ATOL, rtol=0,
                               err_msg="confusable_share")
    for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
        np.testing.assert_allclose(got[name].reshape(batch), want[name].reshape(batch),
                                   atol=ENTROPY_ATOL, rtol=0, err_msg=name)
    if batch == NUM_IMAGES:  # image k is of class k: a trained model gets most of them
        assert np.mean(got["topk_ids"][:, 0] == np.arange(batch)) >= 0.5, got["topk_ids"][:, 0]


def _exported_before_withholding() -> bool:
    """The shipped ``fashion_het``'s card records no withheld fraction: its graph predates
    withheld shares (re-exporting it makes the comparison exact again)."""
    card = ModelCard.model_validate_json((SHIPPED_ONNX / MODEL_CARD_FILENAME).read_text())
    return card.monte_carlo is None or card.monte_carlo.shares_withheld is None
