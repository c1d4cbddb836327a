"""The fused MC softmax head in the ``triton`` language: two streaming kernels, no [B, S, K].

For one example b, sample s and class k the latent logit is (shared noise bank, as in the ONNX
graph)::

    u_sk = mu_k + sum_r V_kr z_R[s, r] + d_k z_K[s, k],      x_sk = u_sk / tau
    V_kr = v_k J_kr  in the parameter-efficient form

and the head returns ``p_bar_k = (1/S) sum_s exp(x_sk - L_s)`` with ``L_s = logsumexp_k x_sk``,
and the per-sample entropies ``H_s = L_s - sum_k p_sk x_sk``. ``p_bar`` needs every ``L_s``
(a reduction over all K) before any sample can be added into it, so the work is split in two
launches that each recompute ``u`` tile by tile (an R-wide dot product per entry: cheaper than
writing and re-reading ``B S K`` floats):

1. ``_sample_stats_kernel``, grid ``(B, ceil(S / BLOCK_S))``: streams over K-blocks with an
   online softmax (running max ``m``, running sum ``Z = sum e^(x - m)`` and running
   ``A = sum e^(x - m) (x - m)``, both rescaled by ``e^(m_old - m_new)`` when the max grows) and
   writes ``L_s = m + log Z`` and ``H_s = log Z - A / Z`` [B, S].
2. ``_class_average_kernel``, grid ``(B, ceil(K / BLOCK_K))``: streams over S-blocks,
   recomputes ``x`` and accumulates ``exp(x - L_s)`` into ``p_bar`` [B, K] in registers; each
   output is written once, by one program, in a fixed order (deterministic, no atomics).

Only [B, S] statistics travel between the two. All arithmetic is fp32 whatever the input dtype
(fp32, bf16 or fp16: loads are upcast); the factor product uses ``tl.dot`` with IEEE fp32
precision so fp32 results agree with the PyTorch layer to ~1e-7.

On CUDA tensors the kernels are compiled by ``triton``. Without CUDA they run in the triton
interpreter (the same source executed with numpy on CPU tensors), which is how CI checks them
without a GPU; triton picks the mode when it is first imported, so on a machine without CUDA
this module sets ``TRITON_INTERPRET=1`` (unless set, or triton is already imported) before
importing it. ``INTERPRETED`` says
which mode is in force.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    # No GPU: compiled triton cannot launch anything, so run kernels in the interpreter. The
    # switch is read when triton is first imported (its own jit functions are built then),
    # hence before the import below, and only if nothing imported triton already.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from torch import Tensor  # noqa: E402

from hetexport.fused.errors import FusedKernelUnavailable  # noqa: E402
from hetexport.fused.sample_stats import SampleStats  # noqa: E402

NEG_BIG = tl.constexpr(-1.0e30)
"""Finite stand-in for -inf as the initial running max (keeps ``0 * (m_old - m_new)`` finite).
A ``tl.constexpr``: compiled triton only lets kernels read globals that are constexpr."""

MIN_DOT_DIM = 16
"""``tl.dot`` needs every tile dimension >= 16; smaller R and K tiles are zero-padded."""


class BlockSizes(NamedTuple):
    """Tile sizes: samples per tile, classes per tile, factors per tile (R padded)."""

    samples: int
    classes: int
    factors: int


@triton.jit
def _latent_tile(
    mu_ptr, scale_ptr, factors_ptr, factor_scale_ptr, zr_ptr, zk_ptr,
    b, offs_s, offs_k, mask_s, mask_k, R, inv_tau,
    stride_mu_b, stride_d_b, stride_f_b, stride_f_k, stride_f_r, stride_v_b,
    stride_zr_b, stride_zr_s, stride_zk_b, stride_zk_s,
    BLOCK_R: tl.constexpr, HAS_FACTORS: tl.constexpr, HAS_FACTOR_SCALE: tl.constexpr,
):
    """x = (mu + V z_R + d * z_K) / tau for one [BLOCK_S, BLOCK_K] tile, fp32."""
    mu = tl.load(mu_ptr + b * stride_mu_b + offs_k, mask=mask_k, other=0.0).to(tl.float32)
    d = tl.load(scale_ptr + b * stride_d_b + offs_k, mask=mask_k, other=0.0).to(tl.float32)
    mask_sk = mask_s[:, None] & mask_k[None, :]
    zk = tl.load(
        zk_ptr + b * stride_zk_b + offs_s[:, None] * stride_zk_s + offs_k[None, :],
        mask=mask_sk, other=0.0,
    ).to(tl.float32)
    u = mu[None, :] + d[None, :] * zk
    if HAS_FACTORS:
        offs_r = tl.arange(0, BLOCK_R)
        mask_r = offs_r < R
        zr = tl.load(
            zr_ptr + b * stride_zr_b + offs_s[:, None] * stride_zr_s + offs_r[None, :],
            mask=mask_s[:, None] & mask_r[None, :], other=0.0,
        ).to(tl.float32)
        factors_t = tl.load(
            factors_ptr + b * stride_f_b + offs_r[:, None] * stride_f_r
            + offs_k[None, :] * stride_f_k,
            mask=mask_r[:, None] & mask_k[None, :], other=0.0,
        ).to(tl.float32)
        low_rank = tl.dot(zr, factors_t, input_precision="ieee")
        if HAS_FACTOR_SCALE:
            v = tl.load(factor_scale_ptr + b * stride_v_b + offs_k, mask=mask_k, other=0.0)
            low_rank = low_rank * v.to(tl.float32)[None, :]
        u = u + low_rank
    return u * inv_tau


@triton.jit
def _sample_stats_kernel(
    mu_ptr, scale_ptr, factors_ptr, factor_scale_ptr, zr_ptr, zk_ptr, lse_ptr, entropy_ptr,
    S, K, R, inv_tau,
    stride_mu_b, stride_d_b, stride_f_b, stride_f_k, stride_f_r, stride_v_b,
    stride_zr_b, stride_zr_s, stride_zk_b, stride_zk_s,
    BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    HAS_FACTORS: tl.constexpr, HAS_FACTOR_SCALE: tl.constexpr,
):
    """Per-sample log-normaliser L_s and entropy H_s [B, S], online over K-blocks."""
    b = tl.program_id(0)
    offs_s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    running_max = tl.full([BLOCK_S], NEG_BIG, tl.float32)
    running_sum = tl.zeros([BLOCK_S], tl.float32)
    running_moment = tl.zeros([BLOCK_S], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = _latent_tile(
            mu_ptr, scale_ptr, factors_ptr, factor_scale_ptr, zr_ptr, zk_ptr,
            b, offs_s, offs_k, mask_s, mask_k, R, inv_tau,
            stride_mu_b, stride_d_b, stride_f_b, stride_f_k, stride_f_r, stride_v_b,
            stride_zr_b, stride_zr_s, stride_zk_b, stride_zk_s,
            BLOCK_R, HAS_FACTORS, HAS_FACTOR_SCALE,
        )
        x = tl.where(mask_k[None, :], x, NEG_BIG)
        new_max = tl.maximum(running_max, tl.max(x, axis=1))
        shift = running_max - new_max  # <= 0
        rescale = tl.exp(shift)
        centred = tl.where(mask_k[None, :], x - new_max[:, None], 0.0)
        weights = tl.where(mask_k[None, :], tl.exp(centred), 0.0)
        # sum e^(x - m_new)(x - m_new) over the old classes = e^shift (A_old + shift Z_old)
        running_moment = rescale * (running_moment + shift * running_sum) + tl.sum(
            weights * centred, axis=1
        )
        running_sum = rescale * running_sum + tl.sum(weights, axis=1)
        running_max = new_max
    log_sum = tl.log(running_sum)
    tl.store(lse_ptr + b * S + offs_s, running_max + log_sum, mask=mask_s)
    tl.store(entropy_ptr + b * S + offs_s, log_sum - running_moment / running_sum, mask=mask_s)


@triton.jit
def _class_average_kernel(
    mu_ptr, scale_ptr, factors_ptr, factor_scale_ptr, zr_ptr, zk_ptr, lse_ptr, probs_ptr,
    S, K, R, inv_tau, inv_samples,
    stride_mu_b, stride_d_b, stride_f_b, stride_f_k, stride_f_r, stride_v_b,
    stride_zr_b, stride_zr_s, stride_zk_b, stride_zk_s,
    BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    HAS_FACTORS: tl.constexpr, HAS_FACTOR_SCALE: tl.constexpr,
):
    """p_bar [B, K] = mean over samples of exp(x_sk - L_s), streaming over S-blocks."""
    b = tl.program_id(0)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    total = tl.zeros([BLOCK_K], tl.float32)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        mask_s = offs_s < S
        x = _latent_tile(
            mu_ptr, scale_ptr, factors_ptr, factor_scale_ptr, zr_ptr, zk_ptr,
            b, offs_s, offs_k, mask_s, mask_k, R, inv_tau,
            stride_mu_b, stride_d_b, stride_f_b, stride_f_k, stride_f_r, stride_v_b,
            stride_zr_b, stride_zr_s, stride_zk_b, stride_zk_s,
            BLOCK_R, HAS_FACTORS, HAS_FACTOR_SCALE,
        )
        lse = tl.load(lse_ptr + b * S + offs_s, mask=mask_s, other=0.0)
        probs = tl.where(mask_s[:, None] & mask_k[None, :], tl.exp(x - lse[:, None]), 0.0)
        total += tl.sum(probs, axis=0)
    tl.store(probs_ptr + b * K + offs_k, total * inv_samples, mask=mask_k)


INTERPRETED: bool = not isinstance(tl.zeros, triton.runtime.JITFunction)
"""True when triton runs kernels in its interpreter (CPU tensors), False when it compiles.
Read from triton's own ``tl.zeros``, built when triton was first imported."""


def block_sizes(
    num_samples: int, num_classes: int, num_factors: int, *, on_gpu: bool
) -> BlockSizes:
    """Tile sizes: large tiles on the GPU; on the interpreter, the smallest legal tiles that
    cover the problem (each tile is a numpy call, padding is wasted work)."""
    factors = max(MIN_DOT_DIM, triton.next_power_of_2(max(num_factors, 1)))
    if on_gpu:
        return BlockSizes(samples=64, classes=64 if factors > 32 else 128, factors=factors)
    samples = min(64, max(MIN_DOT_DIM, triton.next_power_of_2(num_samples)))
    classes = min(128, max(MIN_DOT_DIM, triton.next_power_of_2(num_classes)))
    return BlockSizes(samples=samples, classes=classes, factors=factors)


def launch_mc_softmax(
    mean: Tensor,
    scale: Tensor,
    factor_noise: Tensor,
    diag_noise: Tensor,
    *,
    factors: Tensor | None,
    factor_scale: Tensor | None,
    temperature: float,
) -> SampleStats:
    """Run both kernels. Shapes: mean, scale [B, K]; factors [B, K, R] (dense) or [K, R]
    (shared J, with factor_scale v [B, K]) or None; factor_noise [S, R] or [B, S, R];
    diag_noise [S, K] or [B, S, K]. Inputs may be fp32, bf16 or fp16; outputs are fp32.

    CUDA tensors run compiled; CPU tensors need the interpreter (see ``INTERPRETED``).
    """
    if not (mean.is_cuda or INTERPRETED):
        raise FusedKernelUnavailable(
            "CPU tensors need the triton interpreter, but triton was imported before "
            "TRITON_INTERPRET=1 was set; set it in the environment or use impl='torch'"
        )
    batch, classes = mean.shape
    samples = diag_noise.shape[-2]
    num_factors = 0 if factors is None else int(factors.shape[-1])
    on_gpu = mean.is_cuda
    blocks = block_sizes(samples, classes, num_factors, on_gpu=on_gpu)
    mean, scale = mean.contiguous(), scale.contiguous()
    diag_noise = diag_noise.contiguous()
    has_factors = num_factors > 0
    if has_factors:
        factors = factors.contiguous()
        factor_noise = factor_noise.contiguous()
    else:  # any valid pointer: the factor branch is compiled out
        factors, factor_noise = mean, mean
    has_factor_scale = has_factors and factor_scale is not None
    factor_scale = factor_scale.contiguous() if has_factor_scale else mean
    shared_factors = has_factors and factors.dim() == 2
    strides = (
        mean.stride(0),
        scale.stride(0),
        0 if shared_factors or not has_factors else factors.stride(0),
        factors.stride(-2) if has_factors else 0,
        factors.stride(-1) if has_factors else 0,
        factor_scale.stride(0) if has_factor_scale else 0,
        factor_noise.stride(0) if has_factors and factor_noise.dim() == 3 else 0,
        factor_noise.stride(-2) if has_factors else 0,
        diag_noise.stride(0) if diag_noise.dim() == 3 else 0,
        diag_noise.stride(-2),
    )
    flags = dict(
        BLOCK_S=blocks.samples, BLOCK_K=blocks.classes, BLOCK_R=blocks.factors,
        HAS_FACTORS=has_factors, HAS_FACTOR_SCALE=has_factor_scale,
    )
    inv_tau = 1.0 / float(temperature)
    sample_lse = torch.empty(batch, samples, device=mean.device, dtype=torch.float32)
    sample_entropy = torch.empty_like(sample_lse)
    probs = torch.empty(batch, classes, device=mean.device, dtype=torch.float32)
    pointers = (mean, scale, factors, factor_scale, factor_noise, diag_noise)
    _sample_stats_kernel[(batch, triton.cdiv(samples, blocks.samples))](
        *pointers, sample_lse, sample_entropy, samples, classes, num_factors, inv_tau,
        *strides, **flags,
    )
    _class_average_kernel[(batch, triton.cdiv(classes, blocks.classes))](
        *pointers, sample_lse, probs, samples, classes, num_factors, inv_tau, 1.0 / samples,
        *strides, **flags,
    )
    return SampleStats(probs=probs, sample_lse=sample_lse, sample_entropy=sample_entropy)
