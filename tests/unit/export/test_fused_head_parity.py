"""The fused MC head (triton kernel, through the interpreter on CPU) and its PyTorch fallback
give the materialised HET layer's answer: same p_bar, entropies and top-k, within 1e-5."""

from __future__ import annotations

import itertools

import pytest
import torch

# hetexport.fused.kernel chooses triton's interpreter (no CUDA) only if it imports triton first:
# import it while the test modules are collected, before any test can import triton.
from hetexport.fused import McHeadResult, UnsupportedHead, kernel, mc_head
from hetexport.layers import LatentGaussian, NoiseBank, categorical_entropy, mc_softmax

PROB_ATOL = 1e-5
ENTROPY_ATOL = 1e-5
TEMPERATURE = 1.3
HALF_PROB_ATOL = {torch.float16: 2e-6, torch.bfloat16: 2e-6}
"""fp16/bf16 inputs vs the fp32 layer on the same (rounded) inputs: only accumulation error."""
HALF_ROUNDING_ATOL = {torch.float16: 5e-4, torch.bfloat16: 5e-3}
"""fp16/bf16 inputs vs the fp32 layer on the unrounded inputs: dominated by input rounding."""


def make_latent(batch: int, classes: int, factors: int, *, efficient: bool, seed: int = 0,
                device: str = "cpu") -> LatentGaussian:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    mean, scale = 2 * randn(batch, classes), randn(batch, classes).abs() + 0.1
    if efficient:
        return LatentGaussian(mean, scale, factor_scale=randn(batch, classes),
                              shared_factors=0.5 * randn(classes, factors))
    return LatentGaussian(mean, scale, 0.5 * randn(batch, classes, factors) if factors else None)


GRID = [
    (b, k, s, r, pe)
    for b, k, s, r, pe in itertools.product((1, 3), (10, 37), (16, 100), (0, 3), (False, True))
    if not (pe and r == 0)
]


def assert_matches_layer(result: McHeadResult, latent: LatentGaussian, noise: NoiseBank) -> None:
    reference = mc_softmax(latent, noise, torch.tensor(TEMPERATURE))
    predictive = categorical_entropy(reference.probs)
    torch.testing.assert_close(result.probs, reference.probs, atol=PROB_ATOL, rtol=0)
    torch.testing.assert_close(result.expected_entropy, reference.expected_entropy,
                               atol=ENTROPY_ATOL, rtol=0)
    torch.testing.assert_close(result.predictive_entropy, predictive, atol=ENTROPY_ATOL, rtol=0)
    torch.testing.assert_close(result.mutual_information,
                               (predictive - reference.expected_entropy).clamp_min(0),
                               atol=ENTROPY_ATOL, rtol=0)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize(("batch", "classes", "samples", "factors", "efficient"), GRID)
def test_fused_head_matches_materialised_layer(impl, batch, classes, samples, factors, efficient):
    latent = make_latent(batch, classes, factors, efficient=efficient)
    noise = NoiseBank.fixed(samples, factors, classes, seed=1)
    result = mc_head(latent, noise, TEMPERATURE, top_k=3, impl=impl)
    assert_matches_layer(result, latent, noise)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("efficient", [False, True])
def test_per_example_noise_bank_matches_materialised_layer(impl, efficient):
    latent = make_latent(3, 21, 4, efficient=efficient)
    noise = NoiseBank.draw(40, 4, 21, batch=3, generator=torch.Generator().manual_seed(2))
    assert_matches_layer(mc_head(latent, noise, TEMPERATURE, impl=impl), latent, noise)


def test_chunking_does_not_change_the_answer():
    latent = make_latent(3, 37, 3, efficient=False)
    noise = NoiseBank.fixed(100, 3, 37, seed=1)
    whole = mc_head(latent, noise, TEMPERATURE, impl="torch")
    chunked = mc_head(latent, noise, TEMPERATURE, impl="torch", chunk_elements=3 * 37 * 7)
    torch.testing.assert_close(chunked.probs, whole.probs, atol=1e-7, rtol=0)
    torch.testing.assert_close(chunked.expected_entropy, whole.expected_entropy, atol=1e-6, rtol=0)


def test_top_k_is_sorted_and_taken_from_p_bar():
    latent = make_latent(3, 37, 3, efficient=False)
    result = mc_head(latent, NoiseBank.fixed(16, 3, 37, seed=1), TEMPERATURE, top_k=5,
                     impl="triton")
    assert result.topk_ids.shape == (3, 5) and result.topk_ids.dtype == torch.int64
    torch.testing.assert_close(result.topk_probs, result.probs.gather(1, result.topk_ids))
    assert bool((result.topk_probs[:, :-1] >= result.topk_probs[:, 1:]).all())
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(3), atol=1e-6, rtol=0)


def test_large_logits_do_not_overflow_the_online_softmax():
    latent = make_latent(2, 37, 3, efficient=False)
    hot = LatentGaussian(latent.mean * 200, latent.scale, latent.factors)
    noise = NoiseBank.fixed(16, 3, 37, seed=1)
    result = mc_head(hot, noise, TEMPERATURE, impl="triton")
    assert bool(torch.isfinite(result.probs).all())
    assert_matches_layer(result, hot, noise)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_fp32(dtype):
    """Error budget of bf16/fp16 inputs (documented in export/README.md): the kernel adds only
    fp32 accumulation error; the rest is the rounding of the inputs themselves."""
    latent = make_latent(3, 37, 3, efficient=False)
    noise = NoiseBank.fixed(100, 3, 37, seed=1)
    half = LatentGaussian(latent.mean.to(dtype), latent.scale.to(dtype), latent.factors.to(dtype))
    half_noise = noise.to(dtype=dtype)
    result = mc_head(half, half_noise, TEMPERATURE, impl="triton")
    assert result.probs.dtype == torch.float32
    rounded = LatentGaussian(half.mean.float(), half.scale.float(), half.factors.float())
    same_inputs = mc_softmax(rounded, half_noise.to(dtype=torch.float32),
                             torch.tensor(TEMPERATURE))
    torch.testing.assert_close(result.probs, same_inputs.probs, atol=HALF_PROB_ATOL[dtype], rtol=0)
    exact = mc_softmax(latent, noise, torch.tensor(TEMPERATURE))
    torch.testing.assert_close(result.probs, exact.probs, atol=HALF_ROUNDING_ATOL[dtype], rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the kernel is compiled")
def test_without_cuda_the_kernel_runs_in_the_triton_interpreter():
    assert kernel.INTERPRETED


def test_a_noise_bank_for_other_sizes_is_refused():
    latent = make_latent(2, 10, 3, efficient=False)
    with pytest.raises(UnsupportedHead, match="R=2, K=10"):
        mc_head(latent, NoiseBank.fixed(16, 2, 10, seed=1), TEMPERATURE)


def test_auto_engine_on_cpu_is_the_torch_fallback_with_the_same_answer():
    latent = make_latent(3, 37, 3, efficient=True)
    noise = NoiseBank.fixed(100, 3, 37, seed=1)
    auto = mc_head(latent, noise, TEMPERATURE)
    fused = mc_head(latent, noise, TEMPERATURE, impl="triton")
    torch.testing.assert_close(auto.probs, fused.probs, atol=PROB_ATOL, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled kernel")
@pytest.mark.parametrize(("classes", "samples", "factors", "efficient"),
                         [(10, 1000, 6, False), (1000, 1000, 15, False), (2000, 500, 50, True)])
def test_compiled_kernel_on_cuda_matches_materialised_layer(classes, samples, factors, efficient):
    latent = make_latent(4, classes, factors, efficient=efficient, device="cuda")
    noise = NoiseBank.fixed(samples, factors, classes, seed=1).to("cuda")
    assert_matches_layer(mc_head(latent, noise, TEMPERATURE, impl="triton"), latent, noise)
