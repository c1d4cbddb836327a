"""The head the GPU ensemble serves gives the ONNX head's answer: the latent parameters from the
backbone plus the fused MC head equal the exported ONNX graph's outputs, same noise bank."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch
from hetcontract import HEAD_OUTPUTS, MODEL_CARD_FILENAME, OPTIONAL_HEAD_OUTPUTS, ModelCard
from hetexport.checkpoint import save_checkpoint

# hetexport.fused.kernel chooses triton's interpreter (no CUDA) only if it imports triton first:
# import it while the test modules are collected, before any test can import triton.
from hetexport.fused import (
    EnsembleError,
    kernel,  # noqa: F401
)
from hetexport.fused.ensemble import LatentBackbone, write_gpu_ensemble
from hetexport.fused.served_head import (
    HEAD_CONSTANTS_FILENAME,
    LATENT_FACTOR_SCALE,
    LATENT_FACTORS,
    LATENT_MEAN,
    LATENT_SCALE,
    HeadConstants,
    ServedHead,
)
from hetexport.layers import NoiseBank
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.graph import export_graph
from hetexport.onnx.runner import OnnxRunner
from hetexport.onnx.sampling_plan import DEFAULT_EXPORT_MC_SAMPLES
from hetexport.serving.head import ServingGraph

PROB_ATOL = 1e-5
ENTROPY_ATOL = 1e-4
TOP_K, NUM_CONFUSABLE, SAMPLES = 4, 3, 64


def small_model(head: str, *, classes: int = 10, factors: int = 3):
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=classes, head=head, num_factors=factors, temperature=1.5,
                     eval_mc_samples=SAMPLES, labels=tuple(f"c{k}" for k in range(classes)))
    return build_model(spec).eval()


def served_outputs(model, noise, images, impl):
    latent = model.head.latent(model.backbone(images))
    tensors = {LATENT_MEAN: latent.mean, LATENT_SCALE: latent.scale}
    if latent.parameter_efficient:
        tensors[LATENT_FACTOR_SCALE] = latent.factor_scale
    elif latent.factors is not None:
        tensors[LATENT_FACTORS] = latent.factors
    constants = HeadConstants(
        noise=noise, temperature=float(model.head.temperature()), top_k=TOP_K,
        num_confusable=NUM_CONFUSABLE,
        shared_factors=latent.shared_factors.detach() if latent.parameter_efficient else None,
    )
    with torch.no_grad():
        return ServedHead(constants, impl=impl).run(tensors)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize(("head", "factors"), [("het", 3), ("het", 0), ("het_pe", 3)])
def test_served_head_matches_the_onnx_head(impl, head, factors):
    model = small_model(head, factors=factors)
    noise = NoiseBank.fixed(SAMPLES, factors, 10, seed=7)
    graph = ServingGraph(model, noise=noise, top_k=TOP_K, num_confusable=NUM_CONFUSABLE)
    runner = OnnxRunner(export_graph(graph, (1, 28, 28)).SerializeToString())
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    expected = runner.run(images.numpy())
    actual = served_outputs(model, noise, images, impl)._asdict()
    assert list(actual) == [spec.name.value for spec in (*HEAD_OUTPUTS, *OPTIONAL_HEAD_OUTPUTS)]
    torch.testing.assert_close(actual["probs"], torch.from_numpy(expected["probs"]),
                               atol=PROB_ATOL, rtol=0)
    torch.testing.assert_close(actual["topk_ids"], torch.from_numpy(expected["topk_ids"]))
    for name in ("topk_probs", "topk_correlation", "confusable_share", "latent_probs"):
        torch.testing.assert_close(actual[name], torch.from_numpy(expected[name]),
                                   atol=PROB_ATOL, rtol=0, msg=name)
    for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
        torch.testing.assert_close(actual[name], torch.from_numpy(expected[name]),
                                   atol=ENTROPY_ATOL, rtol=0, msg=name)


def test_ensemble_reuses_the_reference_models_noise_bank_and_card(tmp_path):
    model = small_model("het_pe")
    noise = NoiseBank.fixed(SAMPLES, 3, 10, seed=11)
    graph = ServingGraph(model, noise=noise, top_k=TOP_K, num_confusable=NUM_CONFUSABLE)
    reference = tmp_path / "model_repo" / "fashion_het"
    (reference / "1").mkdir(parents=True)
    onnx.save(export_graph(graph, (1, 28, 28)), str(reference / "1" / "model.onnx"))
    card = ModelCard(name="fashion_het", head="het_pe", num_classes=10,
                     labels=list(model.spec.labels), num_factors=3, mc_samples=SAMPLES,
                     temperature=1.5, top_k=TOP_K, num_confusable=NUM_CONFUSABLE,
                     input=model.spec.input, metrics={"nll": 0.3})
    (reference / MODEL_CARD_FILENAME).write_text(card.model_dump_json())

    written = write_gpu_ensemble(model, tmp_path / "gpu", reference=reference)

    constants = HeadConstants.load(written.head_dir / "1" / HEAD_CONSTANTS_FILENAME)
    torch.testing.assert_close(constants.noise.diag_noise, noise.diag_noise, atol=0, rtol=0)
    torch.testing.assert_close(constants.noise.factor_noise, noise.factor_noise, atol=0, rtol=0)
    torch.testing.assert_close(constants.shared_factors, model.head.shared_factors.detach())
    assert (constants.top_k, constants.num_confusable) == (TOP_K, NUM_CONFUSABLE)
    assert written.card.metrics == {"nll": 0.3} and written.card.name == "fashion_het_gpu"
    config = (written.ensemble_dir / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in config and '"fashion_het_gpu_backbone"' in config
    assert all(f'"{spec.name.value}"' in config for spec in HEAD_OUTPUTS)


def test_backbone_export_yields_the_latent_parameters(tmp_path):
    model = small_model("het")
    written = write_gpu_ensemble(model, tmp_path, mc_samples=SAMPLES)
    runner = OnnxRunner(written.backbone_dir / "1" / "model.onnx")
    images = torch.randn(5, 1, 28, 28)
    got = runner.run(images.numpy())
    with torch.no_grad():
        want = LatentBackbone(model)(images)
    assert list(got) == [LATENT_MEAN, LATENT_SCALE, LATENT_FACTORS]
    for value, reference in zip(got.values(), want, strict=True):
        torch.testing.assert_close(torch.from_numpy(value), reference, atol=1e-5, rtol=1e-5)


def test_ensemble_refuses_heads_the_fused_kernel_does_not_serve(tmp_path):
    with pytest.raises(EnsembleError, match="'det'"):
        write_gpu_ensemble(small_model("det"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_ensemble_cli_writes_the_repository_from_a_checkpoint(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "het.pt", small_model("het"))
    done = subprocess.run(
        [sys.executable, "-m", "hetexport.fused.ensemble", str(checkpoint), str(tmp_path / "gpu"),
         "--name", "demo_gpu"], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    card_path = tmp_path / "gpu" / "demo_gpu" / MODEL_CARD_FILENAME
    card = ModelCard.model_validate_json(card_path.read_text())
    assert (card.name, card.head, card.mc_samples) == ("demo_gpu", "het",
                                                       DEFAULT_EXPORT_MC_SAMPLES)
    assert card.monte_carlo.design == "moment_matched_sobol"  # what the default means here
    assert (tmp_path / "gpu/het_mc_head/1/model.py").is_file()
