"""Batch-invariant functions: the textbook value in PyTorch, the same bits for an example in
any batch once exported to ONNX Runtime."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hetexport.layers import batch_invariant
from torch import nn

ROWS = 37  # an odd batch: every vector kernel has a tail


def _x(*shape: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_softplus_is_log_one_plus_exp_without_overflow():
    x = torch.cat([_x(1000), torch.tensor([-90.0, 0.0, 90.0])])
    torch.testing.assert_close(batch_invariant.softplus(x), torch.nn.functional.softplus(x),
                               atol=2e-6, rtol=1e-6)
    assert batch_invariant.softplus(torch.tensor(90.0)).item() == pytest.approx(90.0)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_sum_and_mean_reduce_any_axis(dim):
    x = _x(5, 7, 3, scale=1.0).double()
    torch.testing.assert_close(batch_invariant.sum(x, dim), x.sum(dim))
    torch.testing.assert_close(batch_invariant.mean(x, dim), x.mean(dim))


def test_log_mean_exp_is_the_log_of_the_mean_probability():
    log_p = torch.log_softmax(_x(4, 50, 6).double(), -1)  # [B, S, K] sample log-probabilities
    want = torch.log(log_p.exp().mean(1))
    torch.testing.assert_close(batch_invariant.log_mean_exp(log_p, 1), want)
    tiny = torch.full((1, 3), -200.0, dtype=torch.float64)  # exp underflows; the log does not
    assert batch_invariant.log_mean_exp(tiny, 1).item() == pytest.approx(-200.0)


def test_log_mean_exp_of_a_single_sample_is_exact():
    log_p = torch.log_softmax(_x(3, 1, 5), -1)
    assert torch.equal(batch_invariant.log_mean_exp(log_p, 1), log_p[:, 0])


def test_log_unit_is_the_log_of_numbers_in_the_unit_interval():
    q = torch.cat([torch.logspace(-12, 0, 500, dtype=torch.float64),
                   torch.rand(500, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)])
    torch.testing.assert_close(batch_invariant.log_unit(q), q.log(), atol=3e-8, rtol=0)
    q32 = q.float()  # six square roots: 64 ulp(1) at most, 8e-6
    assert (batch_invariant.log_unit(q32).double() - q32.double().log()).abs().max() < 8e-6
    assert batch_invariant.log_unit(torch.tensor(0.0)).item() == pytest.approx(
        math.log(batch_invariant.LOG_UNIT_FLOOR), abs=1e-4)


class _Exp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_runtime_exp_gives_an_element_the_same_bits_anywhere(threads):
    """The served head exponentiates its samples' log-probabilities element-wise: ONNX
    Runtime's Exp (MLAS) must round an element alike wherever it lands, tails included."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Exp(), (_x(2, 7, 13),), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "B"}}, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    x = (_x(ROWS, 7, 13, scale=8.0) - 10.0).numpy()  # exponents down to ~ -40
    together = session.run(None, {"x": x})[0]
    for i in range(ROWS):
        for start in (i, max(0, i - 3)):
            rows = x[start:i + 1]
            alone = session.run(None, {"x": rows})[0]
            assert np.array_equal(alone[-1], together[i]), (threads, i, start)


@pytest.mark.parametrize("width", [10, batch_invariant.EXPAND_MAX_WIDTH + 1])
def test_per_sample_broadcasts_a_row_over_the_samples_narrow_or_wide(width):
    x, samples = _x(3, width), torch.zeros(3, 7, width)
    repeated = batch_invariant.per_sample(x, 7)
    assert torch.equal(samples + repeated, x.unsqueeze(1).expand(3, 7, width))
    assert repeated.shape[1] == (7 if width <= batch_invariant.EXPAND_MAX_WIDTH else 1)


class _Functions(nn.Module):
    """Every function on a [B, S, K] input, as the served graph uses them."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        log_p = torch.log_softmax(x, -1)
        return (
            batch_invariant.softplus(x),
            batch_invariant.mean(torch.softmax(x, -1), 1),
            batch_invariant.sum(x, -1),
            batch_invariant.log_mean_exp(log_p, 1),
            batch_invariant.sum(batch_invariant.mean(x, 1), -1),
        )


def _session(threads: int) -> ort.InferenceSession:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Functions(), (_x(2, 16, 10),), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "B"}}, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("threads", [1, 2])
def test_exported_functions_give_an_example_the_same_bits_in_any_batch(threads):
    session = _session(threads)
    x = _x(ROWS, 16, 10).numpy()
    alone = [session.run(None, {"x": x[i:i + 1]}) for i in range(ROWS)]
    shuffled = np.random.default_rng(0).permutation(ROWS)
    for rows in (np.arange(ROWS), shuffled, np.arange(5, 12)):
        together = session.run(None, {"x": x[rows]})
        for position, i in enumerate(rows):
            for got, want in zip(together, alone[i], strict=True):
                assert np.array_equal(got[position], want[0]), (threads, i, position)


def test_exported_functions_match_pytorch():
    x = _x(ROWS, 16, 10)
    got = _session(1).run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = _Functions()(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5 * math.sqrt(16))
