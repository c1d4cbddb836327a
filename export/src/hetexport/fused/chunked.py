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


def chunked_probability_covariance(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    probs: Tensor,
    topk_ids: Tensor,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """``Cov_s(p_i, p_j)`` [B, k, K] for the top classes i, ``p_s = softmax(u_s / tau)``,
    streaming over sample chunks (a second pass after p_bar, which centres it):
    ``(1/S) sum_s (p_si - p_bar_i)(p_sj - p_bar_j)``, never the whole [B, S, K].

    The same quantity as ``hetexport.class_correlation.probability_covariance_rows`` on the
    materialised samples."""
    batch, classes = latent.mean.shape
    samples = noise.num_samples
    step = samples_per_chunk(batch, classes, samples, chunk_elements)
    wide = upcast(latent)
    centre = probs.to(wide.mean.dtype).unsqueeze(1)  # [B, 1, K]
    acc = wide.mean.new_zeros(batch, topk_ids.shape[1], classes)
    for start in range(0, samples, step):
        stop = min(start + step, samples)
        x = chunk_logits(wide, noise, start, stop, temperature)
        centred = torch.softmax(x, -1) - centre  # [B, S_chunk, K]
        index = topk_ids.unsqueeze(1).expand(-1, stop - start, -1)
        top = torch.gather(centred, 2, index)  # [B, S_chunk, k]
        acc += torch.matmul(top.transpose(1, 2), centred)
    return acc / samples
