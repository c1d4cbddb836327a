"""The MC softmax head without the [B, S, K] sample tensor: one entry point, two engines.

``mc_head(latent, noise, tau)`` returns p_bar, the predictive and expected entropies, the mutual
information and the top-k classes for ``u_s = mu + V z_R[s] + d * z_K[s]`` (Collier et al.,
CVPR 2021), with the same noise bank convention as the ONNX head, so their answers agree.

Engines (``impl``):

* ``"triton"``: the fused kernel (``hetexport.fused.kernel``): compiled on CUDA tensors, the
  triton interpreter on CPU tensors (slow; for tests).
* ``"torch"``: PyTorch, a chunk of samples at a time (``hetexport.fused.chunked``).
* ``"auto"`` (default): triton on CUDA tensors, torch on CPU tensors.

Typical usage::

    latent = head.latent(features)
    noise = NoiseBank.fixed(1000, latent.num_factors, latent.num_classes, seed=0)
    out = mc_head(latent, noise, 1.5, top_k=5)       # McHeadResult
    out.probs, out.predictive_entropy, out.topk_ids
"""

from __future__ import annotations

import importlib.util
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from hetexport.fused.chunked import DEFAULT_CHUNK_ELEMENTS, chunked_sample_stats
from hetexport.fused.errors import FusedKernelUnavailable, UnsupportedHead
from hetexport.fused.sample_stats import SampleStats
from hetexport.layers import LatentGaussian, NoiseBank, categorical_entropy

Impl = Literal["auto", "triton", "torch"]


class McHeadResult(NamedTuple):
    """What the MC head returns (all fp32; B examples, K classes, k = top_k).

    Attributes:
        probs: p_bar [B, K] = (1/S) sum_s softmax(u_s / tau).
        predictive_entropy: H[p_bar] [B], nats.
        expected_entropy: (1/S) sum_s H[softmax(u_s / tau)] [B].
        mutual_information: predictive minus expected entropy [B], floored at 0 (it is >= 0 by
            concavity, up to rounding), as in the ONNX head.
        topk_ids: [B, k] int64, classes by decreasing p_bar.
        topk_probs: [B, k], their p_bar.
    """

    probs: Tensor
    predictive_entropy: Tensor
    expected_entropy: Tensor
    mutual_information: Tensor
    topk_ids: Tensor
    topk_probs: Tensor


def mc_head(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    *,
    top_k: int = 1,
    impl: Impl = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> McHeadResult:
    """The MC head's outputs from the latent Gaussian, the noise bank and tau (see module doc)."""
    if not 1 <= top_k <= latent.num_classes:
        raise UnsupportedHead(f"top_k must be in [1, {latent.num_classes}], got {top_k}")
    stats = sample_stats(latent, noise, temperature, impl=impl, chunk_elements=chunk_elements)
    predictive = categorical_entropy(stats.probs)
    expected = stats.sample_entropy.mean(1)
    topk = torch.topk(stats.probs, top_k, dim=-1)
    return McHeadResult(
        probs=stats.probs,
        predictive_entropy=predictive,
        expected_entropy=expected,
        mutual_information=torch.clamp(predictive - expected, min=0.0),
        topk_ids=topk.indices,
        topk_probs=topk.values,
    )


def sample_stats(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: Tensor | float,
    *,
    impl: Impl = "auto",
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> SampleStats:
    """p_bar [B, K] and the per-sample L_s, H_s [B, S] by the chosen engine (see module doc)."""
    check_noise(latent, noise)
    engine = resolve_impl(impl, on_gpu=latent.mean.is_cuda)
    if engine == "torch":
        return chunked_sample_stats(latent, noise, temperature, chunk_elements=chunk_elements)
    from hetexport.fused.kernel import launch_mc_softmax

    dense = latent.factors is not None
    return launch_mc_softmax(
        latent.mean,
        latent.scale,
        noise.factor_noise,
        noise.diag_noise,
        factors=latent.factors if dense else latent.shared_factors,
        factor_scale=None if dense else latent.factor_scale,
        temperature=float(temperature),
    )


def resolve_impl(impl: Impl, *, on_gpu: bool) -> Literal["triton", "torch"]:
    """The engine ``impl`` means here; ``"triton"`` without triton installed is an error."""
    if impl not in ("auto", "triton", "torch"):
        raise UnsupportedHead(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if impl == "torch" or (impl == "auto" and not on_gpu):
        return "torch"
    if not triton_available():
        if impl == "auto":
            return "torch"
        raise FusedKernelUnavailable("impl='triton' needs the triton package (export[fused])")
    return "triton"


def triton_available() -> bool:
    """True when the ``triton`` language package is installed (found, not imported: importing it
    is left to ``hetexport.fused.kernel``, which must choose the interpreter mode first)."""
    return importlib.util.find_spec("triton") is not None


def check_noise(latent: LatentGaussian, noise: NoiseBank) -> None:
    """The bank must be for this latent's R and K (and batch, if per example); HET-XL latents
    (noise on the pre-logits, then the classifier per sample) are not this kernel's form."""
    if latent.prelogit_scale is not None:
        raise UnsupportedHead(
            "HET-XL latents (pre-logit noise) are not supported by the fused head; "
            "use hetexport.layers.mc_softmax"
        )
    if noise.num_classes != latent.num_classes or noise.num_factors != latent.num_factors:
        raise UnsupportedHead(
            f"noise bank is for R={noise.num_factors}, K={noise.num_classes}; the latent has "
            f"R={latent.num_factors}, K={latent.num_classes}"
        )
    if not noise.shared and noise.diag_noise.shape[0] != latent.batch_size:
        raise UnsupportedHead(
            f"per-example noise for {noise.diag_noise.shape[0]} examples, batch is "
            f"{latent.batch_size}"
        )
