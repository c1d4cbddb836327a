"""The exact reference: right to 1e-6 where the answer is known in closed form, honest about its
own error, and the error report measures what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hetexport.class_correlation import SOFTMAX_RULE
from hetexport.exact.error import served_error
from hetexport.exact.integral import EIGEN_MAX_CLASSES, exact_answer
from hetexport.layers import LatentGaussian, bernoulli_entropy, categorical_entropy

TAU = 0.5
F64 = torch.float64


def _gauss_hermite_expectation(f, mean: float, std: float, nodes: int = 200) -> float:
    """E[f(X)], X ~ N(mean, std^2), by Gauss-Hermite quadrature (exact to ~1e-12 here)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float((w / w.sum() * f(mean + std * x)).sum())


def test_no_noise_gives_the_softmax_of_the_mean():
    """V = 0 and d -> 0: E[softmax(u / tau)] = softmax(mu / tau), H[.] its entropy, MI 0."""
    mean = torch.randn(4, 10, dtype=F64, generator=torch.Generator().manual_seed(1))
    latent = LatentGaussian(mean, torch.full_like(mean, 1e-9))
    exact = exact_answer(latent, TAU, link="softmax", points=1 << 12)
    want = torch.softmax(mean / TAU, -1)
    assert torch.allclose(exact.probs, want, atol=1e-6, rtol=0)
    assert torch.allclose(exact.predictive_entropy, categorical_entropy(want), atol=1e-6)
    assert torch.allclose(exact.expected_entropy, categorical_entropy(want), atol=1e-6)
    assert exact.mutual_information.abs().max() < 1e-6
    assert exact.probability_covariance.abs().max() < 1e-12


@pytest.mark.parametrize("link", ["softmax", "sigmoid"])
def test_two_classes_match_a_one_dimensional_quadrature(link):
    """K = 2 softmax: p_1 = E[sigmoid((u_1 - u_0) / tau)] with u_1 - u_0 ~ N(m, s^2), a 1-D
    integral; sigmoid link: each label on its own, E[sigmoid(u_k / tau)], u_k ~ N(mu_k, S_kk)."""
    mean = torch.tensor([[0.3, -0.4]], dtype=F64)
    scale = torch.tensor([[0.7, 1.1]], dtype=F64)
    factors = torch.tensor([[[0.5, 0.1], [-0.2, 0.3]]], dtype=F64)
    latent = LatentGaussian(mean, scale, factors)
    exact = exact_answer(latent, TAU, link=link)
    sigmoid = lambda x: 1 / (1 + np.exp(-x / TAU))  # noqa: E731
    cov = latent.covariance()[0].numpy()
    if link == "softmax":
        diff_var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        p1 = _gauss_hermite_expectation(sigmoid, float(mean[0, 1] - mean[0, 0]), diff_var**0.5)
        want = np.array([1 - p1, p1])
        want_var = _gauss_hermite_expectation(
            lambda x: sigmoid(x) ** 2, float(mean[0, 1] - mean[0, 0]), diff_var**0.5) - p1**2
        assert abs(exact.probability_covariance[0, 1, 1].item() - want_var) < 1e-6
        assert abs(exact.probability_covariance[0, 0, 1].item() + want_var) < 1e-6
    else:
        want = np.array([_gauss_hermite_expectation(sigmoid, float(mean[0, k]), cov[k, k] ** 0.5)
                         for k in range(2)])
    np.testing.assert_allclose(exact.probs[0].numpy(), want, atol=1e-6, rtol=0)
    entropy = categorical_entropy if link == "softmax" else bernoulli_entropy
    assert abs(exact.predictive_entropy.item() - entropy(torch.from_numpy(want)).item()) < 1e-6


def test_states_its_own_error_and_it_covers_the_truth():
    """The replicas' standard error is consistent with the distance to a far more precise run
    (|coarse - fine| within 6 standard errors) and falls faster than plain Monte Carlo's
    1/sqrt(n): 128x the points, well over sqrt(128) ~ 11x less error."""
    gen = torch.Generator().manual_seed(3)
    latent = LatentGaussian(torch.randn(3, 6, dtype=F64, generator=gen),
                            torch.rand(3, 6, dtype=F64, generator=gen) + 0.2,
                            torch.randn(3, 6, 2, dtype=F64, generator=gen))
    coarse = exact_answer(latent, TAU, link="softmax", points=1 << 10, replicas=8)
    fine = exact_answer(latent, TAU, link="softmax", points=1 << 17, replicas=8, seed=100)
    gap = (coarse.probs - fine.probs).abs().amax(1)
    assert torch.all(coarse.standard_error["probs"] > 0)
    assert torch.all(gap <= 6 * coarse.standard_error["probs"] + 1e-9)
    assert torch.all(fine.standard_error["probs"] * 20 < coarse.standard_error["probs"])


def test_error_report_measures_each_served_quantity():
    """A served answer shifted by known amounts is reported off by exactly those amounts."""
    gen = torch.Generator().manual_seed(4)
    latent = LatentGaussian(torch.randn(5, 4, dtype=F64, generator=gen),
                            torch.rand(5, 4, dtype=F64, generator=gen) + 0.3)
    exact = exact_answer(latent, TAU, link="softmax", points=1 << 12)
    top = torch.topk(exact.probs, 2).indices
    served = {
        "probs": exact.probs.numpy() + np.array([0.01, 0, 0, 0]),
        "topk_ids": top.numpy(),
        "topk_probs": torch.gather(exact.probs, 1, top).numpy(),
        "predictive_entropy": exact.predictive_entropy.numpy() + 0.02,
        "expected_entropy": exact.expected_entropy.numpy(),
        "mutual_information": exact.mutual_information.numpy() - 0.03,
        "topk_correlation": np.zeros((5, 2, 2)),
        "confusable_ids": np.zeros((5, 2, 1), dtype=np.int64),
        "confusable_share": np.zeros((5, 2, 1)),
    }
    report = served_error(served, exact, exact_correlation=torch.zeros(5, 2, 2, dtype=F64),
                          rule=SOFTMAX_RULE)
    summary = report.summary()
    assert summary["probs"]["mean"] == pytest.approx(0.01)
    assert summary["predictive_entropy"]["p99"] == pytest.approx(0.02)
    assert summary["mutual_information"]["mean"] == pytest.approx(0.03)
    assert summary["expected_entropy"]["p99"] == pytest.approx(0.0, abs=1e-12)
    assert summary["topk_probs"]["p99"] == pytest.approx(0.0, abs=1e-12)
    assert report.images == 5


def test_above_the_eigenbasis_limit_the_reference_integrates_in_the_noise_coordinates():
    """K > EIGEN_MAX_CLASSES: the same integrals from the R + N noise coordinates, within
    both references' standard errors; no K x K covariance is formed."""
    g = torch.Generator().manual_seed(3)
    classes = EIGEN_MAX_CLASSES + 6
    latent = LatentGaussian(torch.randn(2, classes, generator=g, dtype=F64) * 3,
                            torch.rand(2, classes, generator=g, dtype=F64) * 0.5 + 0.1,
                            torch.randn(2, classes, 3, generator=g, dtype=F64) * 0.5)
    noise_space = exact_answer(latent, TAU, link="softmax", points=1 << 15)
    assert noise_space.probability_covariance is None
    eigen = exact_answer(latent, TAU, link="softmax", points=1 << 15, space="eigen")
    for name in ("probs", "expected_entropy", "predictive_entropy"):
        gap = (getattr(noise_space, name) - getattr(eigen, name)).abs()
        gap = gap.amax(-1) if gap.dim() > 1 else gap
        both = noise_space.standard_error[name] + eigen.standard_error[name]
        assert torch.all(gap <= 6 * both + 1e-9), name
