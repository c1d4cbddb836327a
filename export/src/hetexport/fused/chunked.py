"""The MC softmax head in plain PyTorch, a chunk of samples at a time (CPU fallback).

Same math and return type as the triton kernel (``hetexport.fused.kernel``): for each chunk of
samples it forms ``u = mu + V z_R + d * z_K`` [B, S_chunk, K] in fp32, takes its log-softmax and
adds the chunk's probabilities into p_bar. Peak extra memory is one chunk,
``chunk_elements`` floats, instead of the whole [B, S, K].
"""

from __future__ import annotations

import torch
from torch import Tensor

from hetexport.fused.sample_stats import SampleStats
from hetexport.layers import LatentGaussian, NoiseBank, sample_logits
from hetexport.serving.sample_statistics import Movement, MovementSums, bank_halves

DEFAULT_CHUNK_ELEMENTS = 1 << 22
"""Floats per [B, S_chunk, K] chunk (16 MiB in fp32) unless the caller says otherwise."""

HALF_DTYPES = (torch.float16, torch.bfloat16)


def samples_per_chunk(batch: int, num_classes: int, num_samples: int, chunk_elements: int) -> int:
    """How many samples fit one chunk of ``chunk_elements`` floats (at least 1)."""
    return max(1, min(num_samples, chunk_elements // max(1, batch * num_classes)))


def chunk_logits(
    wide: LatentGaussian, noise: NoiseBank, start: int, stop: int, temperature: Tensor | float
) -> Tensor:
    """``x = (mu + V z_R[s] + d * z_K[s]) / tau`` for samples start..stop-1 -> [B, S_chunk, K].

    ``wide`` is fp32 or fp64 (``upcast`` it once, not per chunk); the bank's chunk is cast to
    its dtype."""
    dtype = wide.mean.dtype
    chunk = NoiseBank(noise.factor_noise[..., start:stop, :].to(dtype),
                      noise.diag_noise[..., start:stop, :].to(dtype))
    return sample_logits(wide, chunk) / temperature


def chunked_sample_stats(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> SampleStats:
    """p_bar, L_s and H_s (see ``SampleStats``) streaming over sample chunks.

    Results are fp32 for fp32/bf16/fp16 inputs (fp64 for fp64)."""
    batch, classes = latent.mean.shape
    samples = noise.num_samples
    step = samples_per_chunk(batch, classes, samples, chunk_elements)
    wide = upcast(latent)
    probs_sum = wide.mean.new_zeros(batch, classes)
    lse_parts, entropy_parts = [], []
    for start in range(0, samples, step):
        x = chunk_logits(wide, noise, start, min(start + step, samples), temperature)
        lse = torch.logsumexp(x, -1, keepdim=True)
        log_p = x - lse
        p = log_p.exp()
        probs_sum += p.sum(1)
        lse_parts.append(lse.squeeze(-1))
        entropy_parts.append(-(p * log_p).sum(-1))
    return SampleStats(
        probs=probs_sum / samples,
        sample_lse=torch.cat(lse_parts, 1),
        sample_entropy=torch.cat(entropy_parts, 1),
    )


def upcast(latent: LatentGaussian) -> LatentGaussian:
    """The latent with bf16/fp16 tensors widened to fp32 (fp32 and fp64 unchanged)."""
    if latent.mean.dtype not in HALF_DTYPES:
        return latent

    def widen(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.float()

    return LatentGaussian(
        widen(latent.mean), widen(latent.scale), widen(latent.factors),
        widen(latent.factor_scale), widen(latent.shared_factors),
    )


def chunked_movement(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    probs: Tensor,
    topk_ids: Tensor,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Movement:
    """The top classes' ``Movement`` (``hetexport.serving.sample_statistics``: covariance rows
    ``Cov_s(p_i, p_j)`` [B, k, K] over all samples and over each half of the bank, and the
    relative standard error of each ``Var_s(p_i)``), ``p_s = softmax(u_s / tau)``, streaming
    over sample chunks (a second pass after p_bar, which centres the top columns): its
    ``MovementSums`` accumulated chunk by chunk, never the whole [B, S, K]."""
    batch, classes = latent.mean.shape
    samples, k = noise.num_samples, topk_ids.shape[1]
    step = samples_per_chunk(batch, classes, samples, chunk_elements)
    wide = upcast(latent)
    dtype = wide.mean.dtype
    weights = bank_halves(noise).to(dtype)  # [2, S]
    top_probs = torch.gather(probs.to(dtype), 1, topk_ids).unsqueeze(1)  # [B, 1, k]
    raw = wide.mean.new_zeros(batch, 2 * k, classes)
    offset = wide.mean.new_zeros(batch, k, 2)
    half_means = wide.mean.new_zeros(batch, 2, classes)
    second = wide.mean.new_zeros(batch, k)
    fourth = wide.mean.new_zeros(batch, k)
    for start in range(0, samples, step):
        stop = min(start + step, samples)
        p = torch.softmax(chunk_logits(wide, noise, start, stop, temperature), -1)
        index = topk_ids.unsqueeze(1).expand(-1, stop - start, -1)
        columns = (torch.gather(p, 2, index) - top_probs).transpose(1, 2)  # [B, k, S_chunk]
        w = weights[:, start:stop]
        raw += torch.matmul(torch.cat([columns * w[0], columns * w[1]], 1), p)
        offset += torch.matmul(columns, w.t())
        half_means += torch.matmul(w, p)
        squares = columns * columns
        second += squares.sum(-1)
        fourth += (squares * squares).sum(-1)
    sums = MovementSums(raw, offset, half_means, second / samples, fourth / samples)
    return sums.movement(samples)
