"""A memory-lean MC softmax for training: forward fused (or chunked), backward recomputed.

The materialised layer (``hetexport.layers.mc_softmax``) keeps the [B, S, K] samples and their
softmax for autograd: at K = 21843, S = 1000, B = 32 that is 0.7 G floats (2.8 GB) per saved
tensor, several of them. Here autograd saves only the inputs and the per-sample statistics
L_s, H_s [B, S]; the backward pass recomputes ``x = u / tau`` one chunk of samples at a time.

Gradients, with ``p_sk = exp(x_sk - L_s)``, upstream ``g`` = dLoss/dp_bar [B, K] and
``g_e`` = dLoss/d expected_entropy [B]::

    dLoss/dx_sk = (1/S) p_sk (g_k - sum_j g_j p_sj) - (g_e / S) p_sk (log p_sk + H_s)
    dLoss/du    = dLoss/dx / tau,           dLoss/dtau = -sum_sk dLoss/dx_sk x_sk / tau
    dmu = sum_s du_s,  dd = sum_s du_s * z_K[s],  dV = sum_s du_s z_R[s]^T
    parameter-efficient (V = diag(v) J):
        dv = sum_s du_s * (J z_R[s]),  dJ = sum_bs (v * du_s) z_R[s]^T

Typical usage (a drop-in for ``mc_softmax``)::

    averaged = mc_softmax_lean(latent, noise, tau)     # MCAverage(probs, entropies)
    loss = -torch.log(averaged.probs.clamp_min(1e-7)).gather(1, y[:, None]).mean()
    loss.backward()
"""

from __future__ import annotations

import torch
from torch import Tensor

from hetexport.fused.chunked import (
    DEFAULT_CHUNK_ELEMENTS,
    chunk_logits,
    samples_per_chunk,
    upcast,
)
from hetexport.fused.mc_head import sample_stats
from hetexport.layers import LatentGaussian, MCAverage, NoiseBank, categorical_entropy


def mc_softmax_lean(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> MCAverage:
    """``mc_softmax`` with O(B S + B K R + chunk) autograd memory instead of O(B S K).

    Forward: the fused triton kernel on CUDA, chunked PyTorch on CPU. Backward: recomputed per
    chunk of ``chunk_elements`` floats. Same results and gradients as ``mc_softmax``.
    """
    tau = torch.as_tensor(temperature, dtype=latent.mean.dtype, device=latent.mean.device)
    probs, expected = _LeanMcSoftmax.apply(
        latent.mean, latent.scale, latent.factors, latent.factor_scale, latent.shared_factors,
        tau, noise.factor_noise, noise.diag_noise, chunk_elements,
    )
    return MCAverage(probs=probs, expected_entropy=expected,
                     predictive_entropy=categorical_entropy(probs))


class _LeanMcSoftmax(torch.autograd.Function):
    """Inputs: mu, d, V | None, v | None, J | None, tau, z_R, z_K, chunk size (see module doc)."""

    @staticmethod
    def forward(ctx, mean, scale, factors, factor_scale, shared_factors, tau, factor_noise,
                diag_noise, chunk_elements):
        latent = LatentGaussian(mean, scale, factors, factor_scale, shared_factors)
        noise = NoiseBank(factor_noise, diag_noise)
        stats = sample_stats(latent, noise, tau, chunk_elements=chunk_elements)
        ctx.chunk_elements = chunk_elements
        ctx.save_for_backward(mean, scale, factors, factor_scale, shared_factors, tau,
                              factor_noise, diag_noise, stats.sample_lse, stats.sample_entropy)
        dtype = mean.dtype
        return stats.probs.to(dtype), stats.sample_entropy.mean(1).to(dtype)

    @staticmethod
    def backward(ctx, grad_probs, grad_expected):
        (mean, scale, factors, factor_scale, shared_factors, tau, factor_noise, diag_noise,
         sample_lse, sample_entropy) = ctx.saved_tensors
        latent = LatentGaussian(mean.detach(), scale.detach(), _detach(factors),
                                _detach(factor_scale), _detach(shared_factors))
        wide = upcast(latent)
        noise = NoiseBank(factor_noise, diag_noise)
        grads = _Gradients.zeros_like(latent, tau)
        batch, classes = mean.shape
        samples = noise.num_samples
        step = samples_per_chunk(batch, classes, samples, ctx.chunk_elements)
        g = grad_probs.to(sample_lse.dtype).unsqueeze(1)  # [B, 1, K]
        g_e = grad_expected.to(sample_lse.dtype)[:, None, None]  # [B, 1, 1]
        tau_value = tau.detach().to(sample_lse.dtype)
        for start in range(0, samples, step):
            stop = min(start + step, samples)
            x = chunk_logits(wide, noise, start, stop, tau_value)  # [B, c, K]
            log_p = x - sample_lse[:, start:stop, None]
            p = log_p.exp()
            dx = p * (g - (p * g).sum(-1, keepdim=True))
            dx -= g_e * p * (log_p + sample_entropy[:, start:stop, None])
            dx /= samples
            grads.add_chunk(latent, noise, start, stop, dx / tau_value)
            grads.tau -= (dx * x).sum() / tau_value
        return (*grads.as_inputs(mean, scale, factors, factor_scale, shared_factors, tau),
                None, None, None)


class _Gradients:
    """Running sums of the input gradients over sample chunks (fp32 or wider)."""

    def __init__(self, mean: Tensor, scale: Tensor, factors: Tensor | None,
                 factor_scale: Tensor | None, shared_factors: Tensor | None, tau: Tensor) -> None:
        self.mean, self.scale, self.factors = mean, scale, factors
        self.factor_scale, self.shared_factors, self.tau = factor_scale, shared_factors, tau

    @classmethod
    def zeros_like(cls, latent: LatentGaussian, tau: Tensor) -> _Gradients:
        def zeros(t: Tensor | None) -> Tensor | None:
            return None if t is None else torch.zeros(t.shape, device=t.device,
                                                      dtype=_accumulation_dtype(t))

        return cls(zeros(latent.mean), zeros(latent.scale), zeros(latent.factors),
                   zeros(latent.factor_scale), zeros(latent.shared_factors),
                   torch.zeros((), device=tau.device, dtype=_accumulation_dtype(tau)))

    def add_chunk(self, latent: LatentGaussian, noise: NoiseBank, start: int, stop: int,
                  du: Tensor) -> None:
        """Add one chunk's contribution, du = dLoss/du [B, c, K]."""
        z_diag = noise.diag_noise[..., start:stop, :].to(du.dtype)
        z_factor = noise.factor_noise[..., start:stop, :].to(du.dtype)
        self.mean += du.sum(1)
        self.scale += (du * z_diag).sum(1)
        per_example = z_factor.dim() == 3
        if self.factors is not None:
            self.factors += torch.einsum("bsk,bsr->bkr" if per_example else "bsk,sr->bkr",
                                         du, z_factor)
        if self.shared_factors is not None:
            shared = latent.shared_factors.to(du.dtype)
            v = latent.factor_scale.to(du.dtype)
            self.factor_scale += (du * torch.matmul(z_factor, shared.t())).sum(1)
            self.shared_factors += torch.einsum(
                "bsk,bsr->kr" if per_example else "bsk,sr->kr", du * v.unsqueeze(1), z_factor
            )

    def as_inputs(self, *inputs: Tensor | None) -> tuple[Tensor | None, ...]:
        """The sums in the order and dtypes of the Function's first six inputs."""
        sums = (self.mean, self.scale, self.factors, self.factor_scale, self.shared_factors,
                self.tau)
        return tuple(
            None if s is None else s.to(t.dtype) for s, t in zip(sums, inputs, strict=True)
        )


def _detach(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


def _accumulation_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32
