"""The HET layers: math against an independent numpy computation, and their properties.

Latent kinds: ``dense`` V [B, K, R], ``efficient`` V = diag(v) J, ``diagonal`` (R = 0) and
``prelogit`` (HET-XL: V = W V', diagonal term W diag(d'^2) W^T with d' [B, D])."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hetexport.layers import (
    MIN_SCALE,
    PROB_EPS,
    DeterministicHead,
    HetSigmoidHead,
    HetSoftmaxHead,
    HetXLHead,
    LatentGaussian,
    NoiseBank,
    Temperature,
    mc_sigmoid,
    mc_softmax,
    sample_logits,
)

B, D, K, R = 4, 8, 6, 3


def numpy_mc(mu, V, d, z_r, z_k, tau, link, prelogit_weight=None):
    """Independent reference: loops over examples and samples, per the paper's formula.

    With ``prelogit_weight`` W [K, D], d is d' [B, D] and the diagonal term is W (d' * z_D)."""
    probs = np.zeros_like(mu)
    expected = np.zeros(mu.shape[0])
    for b in range(mu.shape[0]):
        for s in range(z_k.shape[-2]):
            zr = z_r[s] if z_r.ndim == 2 else z_r[b, s]
            zk = z_k[s] if z_k.ndim == 2 else z_k[b, s]
            diag = d[b] * zk if prelogit_weight is None else prelogit_weight @ (d[b] * zk)
            u = (mu[b] + V[b] @ zr + diag) / tau
            if link == "softmax":
                p = np.exp(u - u.max()) / np.exp(u - u.max()).sum()
                h = -(p * np.log(p)).sum()
            else:
                p = 1 / (1 + np.exp(-u))
                h = -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum()
            probs[b] += p / z_k.shape[-2]
            expected[b] += h / z_k.shape[-2]
    return probs, expected


def random_latent(kind: str, *, batch=B, classes=K, factors=R, seed=0) -> LatentGaussian:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, classes, generator=g, dtype=torch.float64)
    d = torch.rand(batch, classes, generator=g, dtype=torch.float64) + 0.1
    if kind == "dense":
        return LatentGaussian(
            mu, d, torch.randn(batch, classes, factors, generator=g, dtype=torch.float64)
        )
    if kind == "efficient":
        v = torch.randn(batch, classes, generator=g, dtype=torch.float64)
        J = torch.randn(classes, factors, generator=g, dtype=torch.float64)
        return LatentGaussian(mu, d, factor_scale=v, shared_factors=J)
    if kind == "prelogit":
        return LatentGaussian.with_prelogit_diagonal(
            mu,
            prelogit_scale=torch.rand(batch, D, generator=g, dtype=torch.float64) + 0.1,
            prelogit_weight=torch.randn(classes, D, generator=g, dtype=torch.float64) / D**0.5,
            prelogit_factors=torch.randn(batch, D, factors, generator=g, dtype=torch.float64),
        )
    return LatentGaussian(mu, d)


KINDS = ["dense", "efficient", "diagonal", "prelogit"]


def dense_factors(latent: LatentGaussian) -> np.ndarray:
    if latent.factors is not None:
        return latent.factors.numpy()
    if latent.shared_factors is not None:
        return (latent.factor_scale.unsqueeze(-1) * latent.shared_factors).numpy()
    return np.zeros((latent.batch_size, latent.num_classes, 0))


def numpy_diagonal_noise(latent: LatentGaussian) -> tuple[np.ndarray, np.ndarray | None]:
    """(d [B, K], None) for a class-space diagonal, (d' [B, D], W [K, D]) for a pre-logit one."""
    if latent.prelogit_scale is not None:
        return latent.prelogit_scale.numpy(), latent.prelogit_weight.numpy()
    return latent.scale.numpy(), None


def numpy_sigma(latent: LatentGaussian) -> np.ndarray:
    """Sigma [B, K, K] = V V^T + diag(d^2), or V V^T + W diag(d'^2) W^T, formed in full."""
    V = dense_factors(latent)
    d, W = numpy_diagonal_noise(latent)
    low_rank = V @ np.swapaxes(V, 1, 2)
    if W is None:
        return low_rank + np.stack([np.diag(row**2) for row in d])
    return low_rank + np.stack([W @ np.diag(row**2) @ W.T for row in d])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("link", ["softmax", "sigmoid"])
@pytest.mark.parametrize("shared", [True, False])
def test_mc_average_matches_independent_numpy_computation(kind, link, shared):
    latent = random_latent(kind)
    noise = NoiseBank.draw(
        50,
        latent.num_factors,
        latent.diag_noise_dim,
        batch=None if shared else B,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    tau = torch.tensor(1.3, dtype=torch.float64)
    got = (mc_softmax if link == "softmax" else mc_sigmoid)(latent, noise, tau)
    d, W = numpy_diagonal_noise(latent)
    want_p, want_h = numpy_mc(
        latent.mean.numpy(),
        dense_factors(latent),
        d,
        noise.factor_noise.numpy(),
        noise.diag_noise.numpy(),
        1.3,
        link,
        prelogit_weight=W,
    )
    np.testing.assert_allclose(got.probs.numpy(), want_p, atol=1e-12)
    np.testing.assert_allclose(got.expected_entropy.numpy(), want_h, atol=1e-10)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.5])
def test_without_noise_the_layer_reduces_to_tempered_softmax(tau):
    mu = torch.randn(B, K, dtype=torch.float64)
    latent = LatentGaussian(
        mu, torch.full_like(mu, 1e-9), torch.zeros(B, K, R, dtype=torch.float64)
    )
    noise = NoiseBank.draw(20, R, K, dtype=torch.float64)
    got = mc_softmax(latent, noise, torch.tensor(tau, dtype=torch.float64))
    torch.testing.assert_close(got.probs, torch.softmax(mu / tau, -1), atol=1e-8, rtol=0)


def test_head_with_zero_factors_and_floored_scale_is_close_to_tempered_softmax():
    head = HetSoftmaxHead(D, K, num_factors=R, temperature=1.5, eval_mc_samples=200).eval()
    with torch.no_grad():
        head.factor_layer.weight.zero_()
        head.factor_layer.bias.zero_()
        head.scale_layer.weight.zero_()
        head.scale_layer.bias.fill_(-40.0)  # softplus -> 0, d = MIN_SCALE
    phi = torch.randn(B, D)
    out = head(phi)
    torch.testing.assert_close(out.latent.scale, torch.full((B, K), MIN_SCALE))
    mu = head.mean_layer(phi)
    torch.testing.assert_close(out.probs, torch.softmax(mu / 1.5, -1), atol=2e-3, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_covariance_of_latent_logits_matches_low_rank_plus_diagonal(kind):
    latent = random_latent(kind, batch=1, classes=5, factors=2, seed=3)
    noise = NoiseBank.draw(
        200_000,
        latent.num_factors,
        latent.diag_noise_dim,
        generator=torch.Generator().manual_seed(7),
        dtype=torch.float64,
    )
    u = sample_logits(latent, noise)[0].numpy()  # [S, K]
    sigma = numpy_sigma(latent)[0]
    sample_cov = np.cov(u, rowvar=False)
    # standard error of a covariance entry ~ sqrt((S_ii S_jj + S_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / u.shape[0])
    assert np.all(np.abs(sample_cov - sigma) < 5 * se)
    np.testing.assert_allclose(
        u.mean(0), latent.mean[0].numpy(), atol=5 * np.sqrt(np.diag(sigma) / u.shape[0]).max()
    )
    torch.testing.assert_close(latent.covariance()[0], torch.from_numpy(sigma))


@pytest.mark.parametrize("kind", KINDS)
def test_covariance_is_positive_semidefinite_and_rows_match_full_matrix(kind):
    latent = random_latent(kind, seed=5)
    full = latent.covariance()
    torch.testing.assert_close(full, torch.from_numpy(numpy_sigma(latent)))
    assert torch.linalg.eigvalsh(full).min() > -1e-10
    idx = torch.tensor([[2, 0], [1, 5], [3, 3], [4, 1]])
    rows = latent.covariance_rows(idx)
    torch.testing.assert_close(rows, torch.gather(full, 1, idx.unsqueeze(-1).expand(-1, -1, K)))
    torch.testing.assert_close(latent.variance(), torch.diagonal(full, dim1=1, dim2=2))


@pytest.mark.parametrize("kind", KINDS)
def test_correlation_rows_are_normalised_covariance_with_unit_self_correlation(kind):
    latent = random_latent(kind, seed=6)
    full = numpy_sigma(latent)
    std = np.sqrt(np.diagonal(full, axis1=1, axis2=2))
    corr = full / (std[:, :, None] * std[:, None, :])
    idx = torch.tensor([[0, 3]] * B)
    got = latent.correlation_rows(idx, centered=False).numpy()
    np.testing.assert_allclose(got, corr[:, [0, 3], :], atol=1e-12)
    assert np.all(np.abs(got) <= 1 + 1e-12)


def numpy_centered_sigma(latent: LatentGaussian) -> np.ndarray:
    """C Sigma C [B, K, K] with the centring matrix C = I - 1 1^T / K, formed in full."""
    classes = latent.num_classes
    centring = np.eye(classes) - np.ones((classes, classes)) / classes
    return centring @ numpy_sigma(latent) @ centring


def numpy_correlation(sigma: np.ndarray) -> np.ndarray:
    std = np.sqrt(np.diagonal(sigma, axis1=1, axis2=2))
    return sigma / (std[:, :, None] * std[:, None, :])


@pytest.mark.parametrize("kind", KINDS)
def test_centered_covariance_rows_match_numpy_c_sigma_c(kind):
    latent = random_latent(kind, seed=8)
    want = numpy_centered_sigma(latent)
    idx = torch.tensor([[2, 0], [1, 5], [3, 3], [4, 1]])
    rows = latent.centered_covariance_rows(idx).numpy()
    np.testing.assert_allclose(rows, np.take_along_axis(want, idx.numpy()[:, :, None], 1),
                               atol=1e-12)
    np.testing.assert_allclose(latent.centered_covariance().numpy(), want, atol=1e-12)
    np.testing.assert_allclose(latent.centered_variance().numpy(),
                               np.diagonal(want, axis1=1, axis2=2), atol=1e-12)
    np.testing.assert_allclose(latent.row_means().numpy(), numpy_sigma(latent).mean(-1),
                               atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_centered_covariance_rows_sum_to_zero(kind):
    latent = random_latent(kind, seed=9)
    rows = latent.centered_covariance_rows(torch.tensor([[0, 1, 4]] * B))
    np.testing.assert_allclose(rows.sum(-1).numpy(), 0.0, atol=1e-12)
    assert rows.abs().max() > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_centered_correlation_rows_match_numpy_with_unit_self_correlation(kind):
    latent = random_latent(kind, seed=10)
    corr = numpy_correlation(numpy_centered_sigma(latent))
    got = latent.correlation_rows(torch.tensor([[0, 3]] * B), centered=True).numpy()
    np.testing.assert_allclose(got, corr[:, [0, 3], :], atol=1e-12)
    np.testing.assert_array_equal(got[:, [0, 1], [0, 3]], 1.0)
    assert np.all(np.abs(got) <= 1 + 1e-12)


def shifted_by_common_factor(latent: LatentGaussian, direction: torch.Tensor) -> LatentGaussian:
    """The same latent with V replaced by ``V + 1 a^T`` (a = direction [R']): a softmax head
    cannot tell the two apart. A diagonal-only latent gets the rank-1 factor ``1 a^T``; a
    parameter-efficient one (batch 1) ``J + (1 / v) a^T``, so that ``diag(v) J`` gains 1 a^T."""
    ones = torch.ones(latent.batch_size, latent.num_classes, 1, dtype=latent.mean.dtype)
    if latent.parameter_efficient:
        assert latent.batch_size == 1
        shared = latent.shared_factors + direction / latent.factor_scale[0].unsqueeze(-1)
        return dataclasses.replace(latent, shared_factors=shared)
    if latent.factors is None:
        return dataclasses.replace(latent, factors=ones * direction)
    return dataclasses.replace(latent, factors=latent.factors + ones * direction)


@pytest.mark.parametrize("kind", KINDS)
def test_common_shift_of_the_factors_leaves_centered_correlation_unchanged_not_raw(kind):
    batch = 1 if kind == "efficient" else B
    latent = random_latent(kind, batch=batch, seed=11)
    width = max(latent.num_factors, 1)
    direction = 2.0 * torch.ones(width, dtype=torch.float64)
    shifted = shifted_by_common_factor(latent, direction)
    np.testing.assert_allclose(  # the shift is exactly V -> V + 1 a^T
        numpy_sigma(shifted) - numpy_sigma(latent),
        _common_shift_term(latent, direction.numpy()), atol=1e-10)
    idx = torch.tensor([[0, 2, 5]] * batch)
    torch.testing.assert_close(shifted.correlation_rows(idx, centered=True),
                               latent.correlation_rows(idx, centered=True))
    raw_change = shifted.correlation_rows(idx, centered=False) - latent.correlation_rows(
        idx, centered=False)
    assert raw_change.abs().max() > 0.1


def _common_shift_term(latent: LatentGaussian, a: np.ndarray) -> np.ndarray:
    """``(V + 1 a^T)(V + 1 a^T)^T - V V^T = V a 1^T + 1 a^T V^T + |a|^2 1 1^T``."""
    V = dense_factors(latent)
    if V.shape[-1] == 0:
        V = np.zeros((*V.shape[:2], a.shape[0]))
    va = V @ a  # [B, K]
    ones = np.ones(latent.num_classes)
    return va[:, :, None] * ones + ones[:, None] * va[:, None, :] + (a @ a) * np.ones_like(
        va[:, :, None] * ones)


def test_diagonal_noise_is_drawn_per_class_not_broadcast():
    """The JAX reference's [B, S, 1] pitfall would make logits of a diagonal-only head
    perfectly correlated; the paper's [S, K] noise keeps them independent."""
    latent = random_latent("diagonal", batch=1, classes=4)
    noise = NoiseBank.draw(
        50_000, 0, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert noise.diag_noise.shape == (50_000, 4)
    corr = np.corrcoef(sample_logits(latent, noise)[0].numpy(), rowvar=False)
    assert np.abs(corr - np.eye(4)).max() < 0.03


HEADS = {
    "het": lambda **kw: HetSoftmaxHead(D, K, num_factors=R, **kw),
    "het_diag": lambda **kw: HetSoftmaxHead(D, K, num_factors=0, **kw),
    "het_pe": lambda **kw: HetSoftmaxHead(D, K, num_factors=R, parameter_efficient=True, **kw),
    "het_sigmoid": lambda **kw: HetSigmoidHead(D, K, num_factors=R, **kw),
    "het_xl": lambda **kw: HetXLHead(D, K, num_factors=R, **kw),
    "het_xl_diag": lambda **kw: HetXLHead(D, K, num_factors=0, **kw),
    "het_per_example": lambda **kw: HetSoftmaxHead(
        D, K, num_factors=R, share_samples_across_batch=False, **kw
    ),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradients_reach_every_parameter_including_learned_temperature(name):
    head = HEADS[name](learn_temperature=True, temperature=1.2, train_mc_samples=32).train()
    out = head(torch.randn(B, D))
    head.loss(out, torch.tensor([0, 1, 2, 3])).backward()
    for pname, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname
    assert "temperature.raw" in dict(head.named_parameters())


def test_deterministic_head_gradients_and_identity_correlation():
    head = DeterministicHead(D, K, learn_temperature=True)
    out = head(torch.randn(B, D))
    head.loss(out, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    idx = torch.tensor([[0, 1, 2]] * B)
    for centered in (True, False):
        torch.testing.assert_close(
            out.latent.correlation_rows(idx, centered=centered),
            torch.eye(K)[:3].expand(B, 3, K),
        )
    torch.testing.assert_close(out.expected_entropy, -(out.probs * out.probs.log()).sum(-1))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_probabilities_are_valid_and_log_probs_are_clipped_logs(name):
    head = HEADS[name](eval_mc_samples=64).eval()
    out = head(torch.randn(B, D) * 5)
    assert out.probs.shape == (B, K) and out.expected_entropy.shape == (B,)
    assert torch.all((out.probs >= 0) & (out.probs <= 1))
    if head.link == "softmax":
        torch.testing.assert_close(out.probs.sum(-1), torch.ones(B))
    torch.testing.assert_close(out.log_probs, torch.log(out.probs.clamp(PROB_EPS, 1.0)))


def test_softmax_loss_is_negative_log_of_clipped_average_probability():
    head = HetSoftmaxHead(D, K, num_factors=R, train_mc_samples=16)
    out = head(torch.randn(B, D))
    y = torch.tensor([5, 0, 1, 2])
    want = -torch.log(out.probs[torch.arange(B), y].clamp(PROB_EPS, 1)).mean()
    torch.testing.assert_close(head.loss(out, y), want)


def test_sigmoid_loss_accepts_class_ids_or_multi_hot_targets():
    head = HetSigmoidHead(D, K, num_factors=R, train_mc_samples=16)
    out = head(torch.randn(B, D))
    y = torch.tensor([5, 0, 1, 2])
    multi_hot = torch.nn.functional.one_hot(y, K).float()
    p = out.probs.clamp(PROB_EPS, 1 - PROB_EPS)
    want = -(multi_hot * p.log() + (1 - multi_hot) * (1 - p).log()).mean()
    torch.testing.assert_close(head.loss(out, y), want)
    torch.testing.assert_close(head.loss(out, multi_hot), want)


def test_train_and_eval_use_their_own_sample_counts():
    head = HetSoftmaxHead(D, K, num_factors=R, train_mc_samples=7, eval_mc_samples=11)
    like = torch.zeros(1)
    assert head.train().draw_noise(B, like=like).num_samples == 7
    assert head.eval().draw_noise(B, like=like).num_samples == 11


def test_shared_samples_give_batch_independent_results_and_per_example_do_not():
    phi = torch.randn(1, D).expand(2, D)  # the same example twice
    shared = HetSoftmaxHead(D, K, num_factors=R, eval_mc_samples=8).eval()
    per_example = HetSoftmaxHead(
        D, K, num_factors=R, eval_mc_samples=8, share_samples_across_batch=False
    ).eval()
    out = shared(phi)
    assert torch.equal(out.probs[0], out.probs[1])
    out = per_example(phi)
    assert not torch.equal(out.probs[0], out.probs[1])
    assert per_example.draw_noise(2, like=phi).diag_noise.shape == (2, 8, K)


def test_learned_temperature_starts_at_value_and_stays_within_bounds():
    temperature = Temperature(1.5, learned=True, bounds=(0.3, 3.0))
    torch.testing.assert_close(temperature(), torch.tensor(1.5))
    with torch.no_grad():
        temperature.raw.fill_(1e4)
    assert temperature() <= 3.0
    with torch.no_grad():
        temperature.raw.fill_(-1e4)
    assert temperature() >= 0.3
    with pytest.raises(ValueError, match="lower < value < upper"):
        Temperature(5.0, learned=True)


def test_fixed_temperature_has_no_parameters():
    assert list(Temperature(2.0).parameters()) == []
    assert float(Temperature(2.0)()) == 2.0


def test_fixed_noise_bank_is_reproducible_from_its_seed():
    a, b = NoiseBank.fixed(10, 3, 4, seed=42), NoiseBank.fixed(10, 3, 4, seed=42)
    assert torch.equal(a.factor_noise, b.factor_noise) and torch.equal(a.diag_noise, b.diag_noise)
    assert a.shared and a.factor_noise.shape == (10, 3) and a.diag_noise.shape == (10, 4)
    assert not torch.equal(a.diag_noise, NoiseBank.fixed(10, 3, 4, seed=43).diag_noise)


@pytest.mark.parametrize("kind", KINDS)
def test_float64_copy_keeps_every_term_detached_and_leaves_absent_ones_absent(kind):
    latent = LatentGaussian(**{  # float32 terms that carry a graph
        field.name: None if (term := getattr(random_latent(kind), field.name)) is None
        else term.float().requires_grad_()
        for field in dataclasses.fields(LatentGaussian)
    })
    wide = latent.detached_float64()
    for field in dataclasses.fields(latent):
        term, copy = getattr(latent, field.name), getattr(wide, field.name)
        if term is None:
            assert copy is None
            continue
        assert copy.dtype == torch.float64 and not copy.requires_grad
        torch.testing.assert_close(copy, term.detach().double(), rtol=0, atol=0)


def test_mismatched_shapes_fail_with_clear_errors():
    with pytest.raises(ValueError, match="pre-logits"):
        HetSoftmaxHead(D, K)(torch.randn(B, D + 1))
    with pytest.raises(ValueError, match="noise bank is for"):
        mc_softmax(random_latent("dense"), NoiseBank.draw(5, R + 1, K), torch.tensor(1.0))
    with pytest.raises(ValueError, match="factor_scale and shared_factors"):
        LatentGaussian(torch.zeros(2, 3), torch.ones(2, 3), factor_scale=torch.ones(2, 3))
    with pytest.raises(ValueError, match="num_factors >= 1"):
        HetSoftmaxHead(D, K, num_factors=0, parameter_efficient=True)
    with pytest.raises(ValueError, match="prelogit_scale and prelogit_weight"):
        LatentGaussian(torch.zeros(2, 3), torch.zeros(2, 3), prelogit_scale=torch.ones(2, D))
    with pytest.raises(ValueError, match=r"prelogit_scale must be \[B, D\]"):
        LatentGaussian(
            torch.zeros(2, 3),
            torch.zeros(2, 3),
            prelogit_scale=torch.ones(2, D),
            prelogit_weight=torch.ones(3, D + 1),
        )
    with pytest.raises(ValueError, match="noise bank is for"):  # z_K where HET-XL needs z_D
        mc_softmax(random_latent("prelogit"), NoiseBank.draw(5, R, K), torch.tensor(1.0))


def test_extra_repr_states_the_head_settings():
    text = repr(
        HetSoftmaxHead(
            D, K, num_factors=R, temperature=1.5, learn_temperature=True, parameter_efficient=True
        )
    )
    for fragment in (
        "num_classes=6",
        "num_factors=3",
        "parameter_efficient=True",
        "learned",
        "bounds=(0.3, 3.0)",
    ):
        assert fragment in text


# ---- HET-XL: the noise on the pre-logits (Collier et al., ICLR 2023) -----------------------


def het_xl_parts(head: HetXLHead, phi: torch.Tensor) -> dict[str, np.ndarray]:
    """W, b, V'(x) [B, D, R] and d'(x) [B, D] straight from the head's layers, in numpy."""
    params = {n: p.detach().numpy() for n, p in head.named_parameters()}
    x = phi.numpy()
    raw_scale = x @ params["prelogit_scale_layer.weight"].T + params["prelogit_scale_layer.bias"]
    factors = x @ params["prelogit_factor_layer.weight"].T + params["prelogit_factor_layer.bias"]
    return {
        "W": params["mean_layer.weight"],
        "b": params["mean_layer.bias"],
        "V": factors.reshape(x.shape[0], head.in_features, head.num_factors),
        "d": np.logaddexp(0.0, raw_scale) + MIN_SCALE,
    }


def test_het_xl_samples_are_the_classifier_applied_to_noisy_prelogits():
    head = HetXLHead(D, K, num_factors=R).double()
    phi = torch.randn(B, D, dtype=torch.float64)
    noise = NoiseBank.draw(30, R, D, generator=torch.Generator().manual_seed(2), dtype=phi.dtype)
    assert head.diag_noise_dim == D and head.draw_noise(B, like=phi).diag_noise.shape[-1] == D
    u = sample_logits(head.latent(phi), noise).detach().numpy()  # [B, S, K]
    parts = het_xl_parts(head, phi)
    z_r, z_d = noise.factor_noise.numpy(), noise.diag_noise.numpy()
    for b in range(B):
        noisy_phi = phi[b].numpy() + z_r @ parts["V"][b].T + parts["d"][b] * z_d  # [S, D]
        np.testing.assert_allclose(u[b], noisy_phi @ parts["W"].T + parts["b"], atol=1e-12)


def test_het_xl_sample_covariance_matches_the_classifier_sandwich_of_prelogit_covariance():
    head = HetXLHead(D, 5, num_factors=2).double()
    phi = torch.randn(1, D, dtype=torch.float64)
    noise = NoiseBank.draw(
        200_000, 2, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    latent = head.latent(phi)
    u = sample_logits(latent, noise)[0].detach().numpy()  # [S, K]
    parts = het_xl_parts(head, phi)
    V, d, W = parts["V"][0], parts["d"][0], parts["W"]
    sigma = W @ (V @ V.T + np.diag(d**2)) @ W.T  # W Sigma' W^T
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / u.shape[0])
    assert np.all(np.abs(np.cov(u, rowvar=False) - sigma) < 5 * se)
    np.testing.assert_allclose(latent.covariance()[0].detach().numpy(), sigma, atol=1e-12)
    np.testing.assert_allclose(latent.mean[0].detach().numpy(), W @ phi[0].numpy() + parts["b"])


def test_het_xl_without_prelogit_noise_reduces_to_tempered_softmax_of_the_classifier():
    mu = torch.randn(B, K, dtype=torch.float64)
    latent = LatentGaussian.with_prelogit_diagonal(
        mu,
        prelogit_scale=torch.full((B, D), 1e-9, dtype=torch.float64),
        prelogit_weight=torch.randn(K, D, dtype=torch.float64),
        prelogit_factors=torch.zeros(B, D, R, dtype=torch.float64),
    )
    got = mc_softmax(latent, NoiseBank.draw(20, R, D, dtype=torch.float64), torch.tensor(0.7))
    torch.testing.assert_close(got.probs, torch.softmax(mu / 0.7, -1), atol=1e-8, rtol=0)

    head = HetXLHead(D, K, num_factors=R, temperature=1.5, eval_mc_samples=200).eval()
    with torch.no_grad():
        head.prelogit_factor_layer.weight.zero_()
        head.prelogit_factor_layer.bias.zero_()
        head.prelogit_scale_layer.weight.zero_()
        head.prelogit_scale_layer.bias.fill_(-40.0)  # softplus -> 0, d' = MIN_SCALE
    phi = torch.randn(B, D)
    out = head(phi)
    torch.testing.assert_close(out.latent.prelogit_scale, torch.full((B, D), MIN_SCALE))
    want = torch.softmax(head.mean_layer(phi) / 1.5, -1)
    torch.testing.assert_close(out.probs, want, atol=2e-3, rtol=0)


def test_het_xl_prelogit_diagonal_noise_correlates_classes_even_without_factors():
    """W diag(d'^2) W^T is not diagonal: unlike a HET head with R = 0, classes correlate."""
    torch.manual_seed(0)
    latent = HetXLHead(D, K, num_factors=0).latent(torch.randn(B, D))
    corr = latent.correlation_rows(torch.tensor([[0, 1]] * B), centered=False).detach()
    assert latent.num_factors == 0 and corr[:, 0, 1].abs().min() > 1e-3
    torch.testing.assert_close(corr[:, [0, 1], [0, 1]], torch.ones(B, 2))


def test_het_xl_noise_parameters_do_not_grow_with_the_number_of_classes():
    def noise_parameters(classes: int) -> int:
        head = HetXLHead(D, classes, num_factors=R)
        return sum(p.numel() for n, p in head.named_parameters() if n.startswith("prelogit"))

    assert noise_parameters(3) == noise_parameters(1000) == D * (D + 1) * (R + 1)
