"""The "optimized" bank: a moment-matched Sobol bank fitted to a model's latents. It stays
antithetic and whitened, the fit is deterministic, it integrates the latents it was fitted to
(and others like them) better than the bank it started from, and an export fits it on the
selection half of its held-out images."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hetexport.errors import ExportError
from hetexport.exact.bank_fit import fit_bank, whitened_antithetic
from hetexport.exact.integral import EIGEN_MAX_CLASSES, exact_answer
from hetexport.exact.measure import Reference
from hetexport.layers import LatentGaussian, NoiseBank, categorical_entropy, mc_softmax
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.export import build_serving_graph, export_to_repository
from hetexport.onnx.sampling_plan import plan_sampling
from onnx import numpy_helper

R, K, S, TAU = 3, 5, 32, 0.5
F64 = torch.float64


def synthetic_reference(count: int, seed: int) -> Reference:
    """Latents with noise of the size of the logit gaps (where the bank matters)."""
    gen = torch.Generator().manual_seed(seed)
    latent = LatentGaussian(
        torch.randn(count, K, dtype=F64, generator=gen) * 2.0,
        torch.rand(count, K, dtype=F64, generator=gen) * 0.8 + 0.2,
        torch.randn(count, K, R, dtype=F64, generator=gen) * 0.8,
    )
    exact = exact_answer(latent, TAU, link="softmax", points=1 << 14, replicas=4)
    return Reference(latent, exact, TAU, "softmax", "test reference")


def stacked(bank: NoiseBank) -> torch.Tensor:
    return torch.cat([bank.factor_noise, bank.diag_noise], 1).double()


def integration_error(bank: NoiseBank, reference: Reference) -> float:
    """Mean over examples of the p_bar max-abs error plus the expected entropy's, and the
    predictive entropy's error."""
    average = mc_softmax(reference.latent, bank.to(dtype=F64), torch.tensor(TAU, dtype=F64))
    exact = reference.exact
    p_bar = (average.probs - exact.probs).abs().amax(1)
    expected = (average.expected_entropy - exact.expected_entropy).abs()
    predictive = (categorical_entropy(average.probs) - exact.predictive_entropy).abs()
    return float((p_bar + expected + predictive).mean())


@pytest.fixture(scope="module")
def fit_reference() -> Reference:
    return synthetic_reference(40, seed=0)


@pytest.fixture(scope="module")
def fitted(fit_reference):
    return fit_bank(fit_reference, samples=S, seed=0, steps=150)


def test_fitted_bank_is_antithetic_with_mean_zero_and_identity_covariance(fitted):
    z = stacked(fitted.bank)
    assert fitted.bank.factor_noise.shape == (S, R) and fitted.bank.diag_noise.shape == (S, K)
    assert fitted.bank.factor_noise.dtype == torch.float32
    assert torch.equal(z[: S // 2], -z[S // 2:])
    assert z.mean(0).abs().max() < 1e-5
    assert (z.T @ z / S - torch.eye(R + K, dtype=F64)).abs().max() < 1e-5


def test_the_fit_is_deterministic(fit_reference, fitted):
    again = fit_bank(fit_reference, samples=S, seed=0, steps=150)
    assert torch.equal(again.bank.factor_noise, fitted.bank.factor_noise)
    assert torch.equal(again.bank.diag_noise, fitted.bank.diag_noise)


def test_the_fit_starts_at_the_moment_matched_sobol_bank(fit_reference):
    start = fit_bank(fit_reference, samples=S, seed=0, steps=0).bank
    sobol = NoiseBank.fixed(S, R, K, seed=0, design="moment_matched_sobol")
    assert (stacked(start) - stacked(sobol)).abs().max() < 1e-6


def test_whitening_holds_for_any_free_points():
    half = torch.randn(20, 6, dtype=F64, generator=torch.Generator().manual_seed(1)) * 3 + 1
    z = whitened_antithetic(half)
    assert z.mean(0).abs().max() < 1e-12
    assert (z.T @ z / 40 - torch.eye(6, dtype=F64)).abs().max() < 1e-12


def test_with_fewer_pairs_than_dimensions_whitening_goes_block_by_block():
    half = torch.randn(5, 9, dtype=F64, generator=torch.Generator().manual_seed(1)) * 3 + 1
    z = whitened_antithetic(half, factors=2)
    second = z.T @ z / 10
    assert z.mean(0).abs().max() < 1e-12
    assert (second[:2, :2] - torch.eye(2, dtype=F64)).abs().max() < 1e-12
    assert second[:2, 2:].abs().max() < 1e-12
    assert (second.diagonal()[2:] - 1).abs().max() < 1e-12


def test_fitted_bank_integrates_better_than_the_bank_it_started_from(fit_reference, fitted):
    start = NoiseBank.fixed(S, R, K, seed=0, design="moment_matched_sobol")
    assert fitted.final_loss < fitted.initial_loss
    assert integration_error(fitted.bank, fit_reference) < 0.7 * integration_error(
        start, fit_reference)
    unseen = synthetic_reference(40, seed=1)  # latents like them, not fitted to
    assert integration_error(fitted.bank, unseen) < integration_error(start, unseen)


def test_fit_refuses_an_odd_or_too_small_sample_count(fit_reference):
    with pytest.raises(ValueError, match="even"):
        fit_bank(fit_reference, samples=33, seed=0, steps=1)
    with pytest.raises(ValueError, match="S/2 > R"):
        fit_bank(fit_reference, samples=6, seed=0, steps=1)  # 3 pairs, 3 factors


def test_noise_bank_fixed_cannot_draw_a_fitted_bank():
    with pytest.raises(ValueError, match="fitted"):
        NoiseBank.fixed(S, R, K, seed=0, design="optimized")


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=K, head="het", num_factors=R, temperature=0.5,
                     backbone_kwargs={"widths": (4, 8), "feature_dim": 16})
    model = build_model(spec).eval()
    with torch.no_grad():  # spread the latent so that the noise matters
        model.head.mean_layer.weight.mul_(20.0)
    return model, torch.randn(16, 1, 28, 28)


def test_an_export_fits_the_bank_on_the_selection_half_and_bakes_it(model_and_images):
    model, images = model_and_images
    plan = plan_sampling(model, mc_samples=S, mc_error=None, design="optimized", seed=0,
                         images=images, search_seeds=2)
    assert plan.design == "optimized" and plan.samples == S and plan.bank is not None
    assert plan.report_images is not None and torch.equal(plan.report_images, images[8:])
    graph = build_serving_graph(model, mc_samples=S, top_k=2, num_confusable=1,
                                seed=plan.seed, design=plan.design, bank=plan.bank)
    assert torch.equal(graph.noise_diag, plan.bank.diag_noise)
    assert torch.equal(graph.noise_factors, plan.bank.factor_noise)
    chosen = plan_sampling(model, mc_samples=None, mc_error=1.0, design="optimized", seed=0,
                           images=images, search_seeds=1)
    assert (chosen.samples, chosen.design) == (32, "optimized") and chosen.bank is not None
    with pytest.raises(ExportError, match="fitted on held-out images"):
        plan_sampling(model, mc_samples=S, mc_error=None, design="optimized", seed=0,
                      images=None)


def test_with_held_out_images_an_export_fits_its_bank_at_any_k(tmp_path):
    """The default design with held-out images is the fitted bank, also where the bank has
    fewer pairs than dimensions (K = 80 at S = 32: whitened by blocks) and the reference is
    taken in the noise's own coordinates (K > EIGEN_MAX_CLASSES: no share error measured)."""
    classes = EIGEN_MAX_CLASSES + 16
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=classes, head="het", num_factors=2, temperature=0.5,
                     backbone_kwargs={"widths": (4, 8), "feature_dim": 16})
    model = build_model(spec).eval()
    with torch.no_grad():
        model.head.mean_layer.weight.mul_(20.0)
    report = export_to_repository(model, tmp_path, "wide", mc_samples=32,
                                  error_images=torch.randn(6, 1, 28, 28))
    mc = report.card.monte_carlo
    assert (mc.design, mc.samples, mc.images) == ("optimized", 32, 3)
    assert "confusable_share" not in mc.error and mc.error["probs"].p99 < 0.2
    assert report.parity.bit_identical_across_batches
    baked = {t.name: numpy_helper.to_array(t)
             for t in onnx.load(str(report.onnx_path)).graph.initializer}
    start = NoiseBank.fixed(32, 2, classes, seed=mc.seed, design="moment_matched_sobol")
    assert np.abs(baked["noise_diag"] - start.diag_noise.numpy()).max() > 1e-3  # fitted
    np.testing.assert_array_equal(baked["noise_diag"][:16], -baked["noise_diag"][16:])
