"""The served head's one pass over the samples: the textbook averages, covariance rows of the
top classes only, and shares withheld where the samples cannot place a class's movement."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hetexport.class_correlation import (
    MOVEMENT_RELATIVE_ERROR_MAX,
    SHARE_STANDARD_ERROR_MAX,
    SOFTMAX_RULE,
    WITHHELD_SHARE,
    share_estimate,
    withheld_shares,
)
from hetexport.layers import LatentGaussian, NoiseBank, categorical_entropy, mc_softmax
from hetexport.serving.sample_statistics import (
    PICK_BY_PRODUCT_MAX_WIDTH,
    bank_halves,
    movement,
    softmax_statistics,
    tempered_samples,
    top_columns,
)

F64 = torch.float64
TAU = 0.7


def _latent(batch: int, classes: int, factors: int, *, seed: int, noise: float) -> LatentGaussian:
    g = torch.Generator().manual_seed(seed)
    return LatentGaussian(
        torch.randn(batch, classes, generator=g, dtype=F64) * 3,
        torch.rand(batch, classes, generator=g, dtype=F64) * noise + 1e-3,
        torch.randn(batch, classes, factors, generator=g, dtype=F64) * noise,
    )


def _bank(samples: int, factors: int, classes: int, design: str = "moment_matched_sobol"
          ) -> NoiseBank:
    bank = NoiseBank.fixed(samples, factors, classes, seed=3, design=design)
    return NoiseBank(bank.factor_noise.double(), bank.diag_noise.double())


@pytest.mark.parametrize("classes", [7, 70])  # one product forms the samples / plus a broadcast
def test_one_softmax_pass_gives_the_textbook_averages(classes):
    latent, bank = _latent(5, classes, 3, seed=0, noise=1.0), _bank(256, 3, classes)
    stats = softmax_statistics(tempered_samples(latent, bank, torch.tensor(TAU, dtype=F64)),
                               top_k=4, halves=bank_halves(bank))
    want = mc_softmax(latent, bank, torch.tensor(TAU, dtype=F64))
    torch.testing.assert_close(stats.probs, want.probs)
    torch.testing.assert_close(stats.expected_entropy, want.expected_entropy)
    torch.testing.assert_close(stats.predictive_entropy, categorical_entropy(want.probs))
    torch.testing.assert_close(stats.topk_probs, torch.topk(want.probs, 4, -1).values)
    samples = want.sample_probs
    centred = samples - samples.mean(1, keepdim=True)
    cov = torch.einsum("bsk,bsl->bkl", centred, centred) / samples.shape[1]
    rows = torch.gather(cov, 1, stats.topk_ids.unsqueeze(-1).expand(-1, -1, classes))
    torch.testing.assert_close(stats.movement.rows, rows)  # k rows, never [B, K, K]
    for half, weights in enumerate(bank_halves(bank)):
        part = samples[:, weights > 0]
        part = part - part.mean(1, keepdim=True)
        half_cov = torch.einsum("bsk,bsl->bkl", part, part) / part.shape[1]
        torch.testing.assert_close(stats.movement.half_rows[:, half], torch.gather(
            half_cov, 1, stats.topk_ids.unsqueeze(-1).expand(-1, -1, classes)))


def test_an_antithetic_bank_keeps_its_pairs_in_one_half_and_other_banks_split_in_two():
    antithetic = bank_halves(_bank(16, 2, 5, "antithetic_sobol"))
    for weights in antithetic:
        chosen = weights > 0
        assert torch.equal(chosen[:8], chosen[8:]) and int(chosen.sum()) == 8
    plain = bank_halves(_bank(16, 2, 5, "sobol"))
    assert torch.equal(plain[0] > 0, torch.arange(16) < 8)
    torch.testing.assert_close(antithetic.sum(-1), torch.ones(2, dtype=F64))


def test_the_relative_error_of_the_movement_counts_the_samples_that_carry_it():
    """Var's relative standard error is sqrt(1 / n_eff - 1 / S), n_eff = (sum d^2)^2 / sum d^4:
    0 for a class every sample moves by the same amount, near its largest, sqrt(1 - 1/S), for
    one that a single sample moves."""
    samples = 16
    even = torch.tensor([[0.6, 0.4], [0.4, 0.6]], dtype=F64).repeat(samples // 2, 1)
    spike = torch.tensor([[0.99, 0.01]], dtype=F64).repeat(samples, 1)
    spike[5] = torch.tensor([0.5, 0.5], dtype=F64)
    probs_s = torch.stack([even, spike])  # [2, S, 2]
    halves = bank_halves(_bank(samples, 1, 2, "sobol"))
    half_means = torch.matmul(halves, probs_s)
    probs = half_means.mean(1)
    top_probs, top_ids = torch.topk(probs, 1, -1)
    error = movement(probs_s, half_means, top_ids, top_probs, halves).variance_error
    torch.testing.assert_close(error[0, 0], torch.tensor(0.0, dtype=F64))
    d = spike[:, 0] - spike[:, 0].mean()
    n_eff = d.square().sum() ** 2 / d.pow(4).sum()
    torch.testing.assert_close(error[1, 0], (1 / n_eff - 1 / samples).sqrt())
    assert float(n_eff) < 1.2 and float(error[1, 0]) > 0.9


def test_smooth_movement_is_served_and_movement_carried_by_few_samples_is_withheld():
    """Small noise moves p_i smoothly with every sample: its shares are served. A large
    diagonal noise on a class far below the top moves it in a few samples' spikes: withheld,
    with the served share -1 for each of its confusable classes."""
    classes = 6
    mean = torch.tensor([[4.0, 3.5, 3.0, -4.0, -5.0, -6.0]], dtype=F64)
    scale = torch.tensor([[0.2, 0.2, 0.2, 4.0, 0.2, 0.2]], dtype=F64)
    factors = torch.full((1, classes, 1), 0.1, dtype=F64)
    factors[0, 1, 0] = -0.1
    latent = LatentGaussian(mean, scale, factors)
    bank = _bank(256, 1, classes)
    stats = softmax_statistics(tempered_samples(latent, bank, torch.tensor(1.0, dtype=F64)),
                               top_k=4, halves=bank_halves(bank))
    move = stats.movement
    estimate = share_estimate(move.rows, move.half_rows, move.variance_error, stats.topk_ids,
                              rule=SOFTMAX_RULE)
    top = stats.topk_ids[0].tolist()
    assert top[:3] == [0, 1, 2] and top[3] == 3
    assert bool(estimate.moving[0, :4].all())
    assert not bool(estimate.withheld[0, 0])  # the top class: every sample moves it a little
    assert float(estimate.variance_error[0, 0]) < MOVEMENT_RELATIVE_ERROR_MAX
    assert float(estimate.share_error[0, 0]) < SHARE_STANDARD_ERROR_MAX
    assert bool(estimate.withheld[0, 3])  # class 3: a few spikes carry all of its movement
    assert float(estimate.variance_error[0, 3]) > MOVEMENT_RELATIVE_ERROR_MAX
    ids, values = withheld_shares(estimate, stats.topk_ids, num_confusable=2)
    assert torch.equal(values[0, 3], torch.full((2,), WITHHELD_SHARE, dtype=F64))
    served = estimate.shares[0, 0].gather(0, ids[0, 0])
    torch.testing.assert_close(values[0, 0], served)
    assert math.isclose(float(estimate.shares[0, 0].sum()), 1.0, rel_tol=1e-9)


def _sampled(batch: int, samples: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(classes)
    probs_s = torch.softmax(torch.randn(batch, samples, classes, generator=g) * 3, -1)
    return probs_s, torch.topk(probs_s.mean(1), 5, -1).indices


@pytest.mark.parametrize("classes",
                         [PICK_BY_PRODUCT_MAX_WIDTH, PICK_BY_PRODUCT_MAX_WIDTH + 1, 1000])
def test_the_top_columns_are_the_samples_own_values_bit_for_bit(classes):
    """Picked by the one-hot product (narrow) or a gather (wide): the same bits either way."""
    probs_s, ids = _sampled(3, 64, classes)
    want = probs_s[torch.arange(3)[:, None, None], torch.arange(64)[None, :, None], ids[:, None]]
    assert torch.equal(top_columns(probs_s, ids), want)


class _TopColumns(torch.nn.Module):
    def forward(self, probs_s: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return top_columns(probs_s, ids)


@pytest.mark.parametrize("classes", [10, 200])
def test_exported_top_columns_give_an_example_the_same_bits_in_any_batch(classes):
    probs_s, ids = _sampled(6, 32, classes)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_TopColumns(), (probs_s, ids), buffer, dynamo=False,
                          input_names=["p", "ids"], dynamic_axes={"p": {0: "B"}, "ids": {0: "B"}},
                          opset_version=17)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    p, i = probs_s.numpy(), ids.numpy()
    together = session.run(None, {"p": p, "ids": i})[0]
    np.testing.assert_array_equal(together, np.take_along_axis(p, i[:, None, :], 2))
    for row in range(len(p)):
        alone = session.run(None, {"p": p[row:row + 1], "ids": i[row:row + 1]})[0]
        assert np.array_equal(alone[0], together[row]), row
