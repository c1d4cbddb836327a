"""Baked noise banks: each design is what its name says, reproducible, and S and the seed are
chosen by measured error against the exact integral."""

from __future__ import annotations

import pytest
import torch
from hetexport.errors import ExportError
from hetexport.exact.bank_search import score, search_bank
from hetexport.exact.measure import head_error, reference_for
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import BANK_DESIGNS, resolve_design
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.sampling_plan import plan_sampling

R, K = 3, 5


def stacked(bank: NoiseBank) -> torch.Tensor:
    return torch.cat([bank.factor_noise, bank.diag_noise], 1).double()


def test_normal_design_is_the_bank_exports_used_before():
    """Factor noise drawn first, then diagonal noise, from PyTorch's CPU generator."""
    bank = NoiseBank.fixed(50, R, K, seed=7, design="normal")
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(bank.factor_noise, torch.randn(50, R, generator=generator))
    assert torch.equal(bank.diag_noise, torch.randn(50, K, generator=generator))


@pytest.mark.parametrize("design", sorted(BANK_DESIGNS))
def test_every_design_is_reproducible_and_shaped_like_a_bank(design):
    first = NoiseBank.fixed(64, R, K, seed=3, design=design)
    again = NoiseBank.fixed(64, R, K, seed=3, design=design)
    other = NoiseBank.fixed(64, R, K, seed=4, design=design)
    assert first.factor_noise.shape == (64, R) and first.diag_noise.shape == (64, K)
    assert torch.equal(first.factor_noise, again.factor_noise)
    assert not torch.equal(first.diag_noise, other.diag_noise)
    assert first.factor_noise.dtype == torch.float32 and torch.isfinite(stacked(first)).all()


def test_antithetic_bank_holds_each_point_and_its_negation():
    z = stacked(NoiseBank.fixed(64, R, K, seed=0, design="antithetic_sobol"))
    assert torch.equal(z[:32], -z[32:])
    assert z.mean(0).abs().max() == 0


def test_auto_design_is_the_best_design_the_sample_count_allows():
    assert resolve_design("auto", 64, R, K) == "moment_matched_sobol"  # 32 pairs > 8 dims
    assert resolve_design("auto", 16, R, K) == "moment_matched_sobol"  # by blocks: 8 pairs > R
    assert resolve_design("auto", 1000, 50, 21843) == "moment_matched_sobol"
    assert resolve_design("auto", 6, R, K) == "sobol"  # 3 pairs cannot span the 3 factors
    assert resolve_design("auto", 7, R, K) == "sobol"  # no pairs at all
    assert resolve_design("sobol", 16, R, K) == "sobol"
    auto = NoiseBank.fixed(6, R, K, seed=1, design="auto")
    sobol = NoiseBank.fixed(6, R, K, seed=1, design="sobol")
    assert torch.equal(auto.diag_noise, sobol.diag_noise)


def test_moment_matched_bank_has_exactly_mean_zero_and_identity_second_moment():
    z = stacked(NoiseBank.fixed(64, R, K, seed=0, design="moment_matched_sobol"))
    assert z.mean(0).abs().max() < 1e-6
    assert (z.T @ z / 64 - torch.eye(R + K, dtype=torch.float64)).abs().max() < 1e-5


@pytest.mark.parametrize(("samples", "factors", "width"), [(16, R, K), (64, 6, 1000)])
def test_with_fewer_pairs_than_dimensions_the_bank_is_whitened_block_by_block(
        samples, factors, width):
    """S/2 <= R + N: mean 0, the factor block's second moment I, factor-diagonal products 0
    and every diagonal coordinate's square 1, exactly (float32 rounding)."""
    z = stacked(NoiseBank.fixed(samples, factors, width, seed=0, design="moment_matched_sobol"))
    assert torch.equal(z[: samples // 2], -z[samples // 2:])
    second = z.T @ z / samples
    eye = torch.eye(factors, dtype=torch.float64)
    assert (second[:factors, :factors] - eye).abs().max() < 1e-6
    assert second[:factors, factors:].abs().max() < 1e-6
    assert (second.diagonal()[factors:] - 1).abs().max() < 1e-6


def test_designs_refuse_sample_counts_they_cannot_make():
    with pytest.raises(ValueError, match="even"):
        NoiseBank.fixed(63, R, K, seed=0, design="antithetic_sobol")
    with pytest.raises(ValueError, match="S/2 > R"):  # 3 pairs cannot span the 3 factors
        NoiseBank.fixed(6, R, K, seed=0, design="moment_matched_sobol")
    with pytest.raises(ValueError, match="unknown bank design"):
        NoiseBank.fixed(8, R, K, seed=0, design="lattice")


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=K, head="het", num_factors=R, temperature=0.5,
                     backbone_kwargs={"widths": (4, 8), "feature_dim": 16})
    model = build_model(spec).eval()
    with torch.no_grad():  # spread the latent so that the noise matters
        model.head.mean_layer.weight.mul_(20.0)
    return model, torch.randn(24, 1, 28, 28)


def test_quasi_random_banks_beat_plain_monte_carlo_at_the_same_sample_count(model_and_images):
    """The reason for the designs: at S = 128 a Sobol bank's p_bar error (against the exact
    integral) is below plain Monte Carlo's on the same latents."""
    model, images = model_and_images
    reference = reference_for(model, images, points=1 << 14)

    def p_bar_mean_error(design: str) -> float:
        bank = NoiseBank.fixed(128, R, K, seed=0, design=design)
        return head_error(model, images, reference, bank=bank).summary()["probs"]["mean"]

    assert p_bar_mean_error("sobol") < p_bar_mean_error("normal")


def test_bank_search_keeps_the_seed_with_the_lowest_score(model_and_images):
    model, images = model_and_images
    reference = reference_for(model, images, points=1 << 12)
    found = search_bank(model, images, reference, samples=32, design="sobol", seeds=range(4))
    assert set(found.scores) == {0, 1, 2, 3}
    assert found.score == min(found.scores.values()) == found.scores[found.seed]
    bank = NoiseBank.fixed(32, R, K, seed=found.seed, design="sobol")
    summary = head_error(model, images, reference, bank=bank, top_k=1,
                         num_confusable=1).summary()
    assert score(summary, found.baseline) == pytest.approx(found.score)
    assert found.p_bar_p99 == pytest.approx(summary["probs"]["p99"])


def test_mc_error_picks_the_smallest_sample_count_that_meets_it(model_and_images):
    model, images = model_and_images
    loose = plan_sampling(model, mc_samples=None, mc_error=1.0, design="sobol", seed=0,
                          images=images, search_seeds=2)
    assert loose.samples == 32 and loose.requested_p99 == 1.0
    assert loose.report_images is not None and len(loose.report_images) == 12
    with pytest.raises(ExportError, match="no S reaches"):
        plan_sampling(model, mc_samples=None, mc_error=0.0, design="sobol", seed=0,
                      images=images[:4], search_seeds=1)
    with pytest.raises(ExportError, match="held-out images"):
        plan_sampling(model, mc_samples=None, mc_error=0.01, design="sobol", seed=0,
                      images=None)
    with pytest.raises(ExportError, match="not both"):
        plan_sampling(model, mc_samples=64, mc_error=0.01, design="sobol", seed=0,
                      images=images)
