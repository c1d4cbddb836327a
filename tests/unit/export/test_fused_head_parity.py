"""The fused MC head (triton kernel, through the interpreter on CPU) and its PyTorch fallback
give the HET layer's answer: same p_bar, entropies and top-k, within 1e-5.

The reference is written here, independently of the code under test (which shares
``sample_logits`` with the layer): numpy in float64, one example and one sample at a time,
``u_s = mu + V z_R[s] + d * z_K[s]``, ``p_bar = mean_s softmax(u_s / tau)``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

# hetexport.fused.kernel chooses triton's interpreter (no CUDA) only if it imports triton first:
# import it while the test modules are collected, before any test can import triton.
from hetexport.fused import McHeadResult, UnsupportedHead, kernel, mc_head
from hetexport.layers import LatentGaussian, NoiseBank

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


def _numpy(tensor: torch.Tensor | None) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().double().numpy()


def reference_mc_softmax(latent: LatentGaussian, noise: NoiseBank,
                         temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(p_bar [B, K], mean_s H[softmax(u_s / tau)] [B]) in float64, sample by sample."""
    mean, scale = _numpy(latent.mean), _numpy(latent.scale)
    batch, classes = mean.shape
    if latent.factors is not None:
        factors = _numpy(latent.factors)
    elif latent.factor_scale is not None:  # V = diag(v) J
        factors = _numpy(latent.factor_scale)[:, :, None] * _numpy(latent.shared_factors)[None]
    else:
        factors = np.zeros((batch, classes, 0))
    z_r, z_k = _numpy(noise.factor_noise), _numpy(noise.diag_noise)
    probs, entropy = np.zeros((batch, classes)), np.zeros(batch)
    for b in range(batch):
        z_r_b = z_r[b] if z_r.ndim == 3 else z_r
        z_k_b = z_k[b] if z_k.ndim == 3 else z_k
        for z_r_s, z_k_s in zip(z_r_b, z_k_b, strict=True):
            u = mean[b] + factors[b] @ z_r_s + scale[b] * z_k_s
            x = u / temperature
            log_p = x - x.max() - np.log(np.sum(np.exp(x - x.max())))
            p = np.exp(log_p)
            probs[b] += p
            entropy[b] -= np.sum(p * log_p)
        probs[b] /= len(z_k_b)
        entropy[b] /= len(z_k_b)
    return probs, entropy


def assert_matches_layer(result: McHeadResult, latent: LatentGaussian, noise: NoiseBank) -> None:
    probs, expected = reference_mc_softmax(latent, noise, TEMPERATURE)
    predictive = -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=-1)
    np.testing.assert_allclose(_numpy(result.probs), probs, atol=PROB_ATOL, rtol=0)
    np.testing.assert_allclose(_numpy(result.expected_entropy), expected, atol=ENTROPY_ATOL,
                               rtol=0)
    np.testing.assert_allclose(_numpy(result.predictive_entropy), predictive,
                               atol=ENTROPY_ATOL, rtol=0)
    np.testing.assert_allclose(_numpy(result.mutual_information),
                               np.maximum(predictive - expected, 0), atol=ENTROPY_ATOL, rtol=0)


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
    same_inputs, _ = reference_mc_softmax(rounded, half_noise.to(dtype=torch.float32),
                                          TEMPERATURE)
    np.testing.assert_allclose(_numpy(result.probs), same_inputs, atol=HALF_PROB_ATOL[dtype],
                               rtol=0)
    exact, _ = reference_mc_softmax(latent, noise, TEMPERATURE)
    np.testing.assert_allclose(_numpy(result.probs), exact, atol=HALF_ROUNDING_ATOL[dtype],
                               rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the kernel is compiled")
def test_without_cuda_the_kernel_runs_in_the_triton_interpreter():
    assert kernel.INTERPRETED


def test_a_noise_bank_for_other_sizes_is_refused():
    latent = make_latent(2, 10, 3, efficient=False)
    with pytest.raises(UnsupportedHead, match="R=2, K=10"):
        mc_head(latent, NoiseBank.fixed(16, 2, 10, seed=1), TEMPERATURE)


def test_auto_engine_on_cpu_is_the_torch_fallback_with_the_same_answer(monkeypatch):
    latent = make_latent(3, 37, 3, efficient=True)
    noise = NoiseBank.fixed(100, 3, 37, seed=1)
    launches: list[str] = []
    real_launch = kernel.launch_mc_softmax

    def counting_launch(*args, **kwargs):
        launches.append("triton")
        return real_launch(*args, **kwargs)

    monkeypatch.setattr(kernel, "launch_mc_softmax", counting_launch)
    auto = mc_head(latent, noise, TEMPERATURE)
    assert launches == [], "on CPU tensors 'auto' does not launch the kernel"
    fallback = mc_head(latent, noise, TEMPERATURE, impl="torch")
    assert torch.equal(auto.probs, fallback.probs), "bit for bit the PyTorch fallback's answer"
    fused = mc_head(latent, noise, TEMPERATURE, impl="triton")
    assert launches == ["triton"], "the count sees a kernel launch"
    assert_matches_layer(auto, latent, noise)
    torch.testing.assert_close(auto.probs, fused.probs, atol=PROB_ATOL, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled kernel")
@pytest.mark.parametrize(("classes", "samples", "factors", "efficient"),
                         [(10, 1000, 6, False), (1000, 1000, 15, False), (2000, 500, 50, True)])
def test_compiled_kernel_on_cuda_matches_materialised_layer(classes, samples, factors, efficient):
    latent = make_latent(4, classes, factors, efficient=efficient, device="cuda")
    noise = NoiseBank.fixed(samples, factors, classes, seed=1).to("cuda")
    assert_matches_layer(mc_head(latent, noise, TEMPERATURE, impl="triton"), latent, noise)
