"""The MC head as Triton's Python backend runs it: latent parameters in, HEAD_OUTPUTS out.

The ONNX backbone of the GPU ensemble (``hetexport.fused.ensemble``) ends at the latent
Gaussian: ``latent_mean`` mu [B, K], ``latent_scale`` d [B, K] and either ``latent_factors``
V [B, K, R] (dense) or ``latent_factor_scale`` v [B, K] (parameter-efficient; J [K, R] is
input-independent and lives here with the noise bank). This module turns those into exactly
``hetcontract.HEAD_OUTPUTS``, with the same noise bank, numerics and correlation outputs as the
ONNX head (``hetexport.serving.head.ServingGraph``), so the two answers agree.

Typical usage::

    head = ServedHead.load(version_dir / HEAD_CONSTANTS_FILENAME, device="cuda:0")
    outputs = head.run({"latent_mean": mu, "latent_scale": d, "latent_factors": V})
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hetcontract import HEAD_OUTPUTS
from torch import Tensor

from hetexport.class_correlation import (
    SOFTMAX_RULE,
    CorrelationOutputs,
    share_estimate,
    topk_correlation,
    withheld_shares,
)
from hetexport.fused.chunked import chunked_movement
from hetexport.fused.errors import UnsupportedHead
from hetexport.fused.mc_head import Impl, mc_head
from hetexport.layers import LatentGaussian, NoiseBank
from hetexport.serving.head import ServingOutputs, latent_link

HEAD_CONSTANTS_FILENAME = "head_constants.npz"
LATENT_MEAN = "latent_mean"
LATENT_SCALE = "latent_scale"
LATENT_FACTORS = "latent_factors"
LATENT_FACTOR_SCALE = "latent_factor_scale"


@dataclass(frozen=True)
class HeadConstants:
    """Everything the head needs besides the latent: the shared noise bank z_R [S, R],
    z_K [S, K], J [K, R] (parameter-efficient heads only), tau, k_max and m."""

    noise: NoiseBank
    shared_factors: Tensor | None
    temperature: float
    top_k: int
    num_confusable: int

    @property
    def latent_names(self) -> tuple[str, ...]:
        """The backbone outputs this head consumes, in order."""
        names = (LATENT_MEAN, LATENT_SCALE)
        if self.shared_factors is not None:
            return (*names, LATENT_FACTOR_SCALE)
        if self.noise.num_factors > 0:
            return (*names, LATENT_FACTORS)
        return names

    def to_bytes(self) -> bytes:
        """The ``.npz`` file's bytes (what ``load`` reads)."""
        arrays = {
            "noise_factors": self.noise.factor_noise.float().numpy(),
            "noise_diag": self.noise.diag_noise.float().numpy(),
            "temperature": np.float64(self.temperature),
            "top_k": np.int64(self.top_k),
            "num_confusable": np.int64(self.num_confusable),
        }
        if self.shared_factors is not None:
            arrays["shared_factors"] = self.shared_factors.float().numpy()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path, *, device: torch.device | str = "cpu") -> HeadConstants:
        with np.load(path) as arrays:
            tensors = {k: torch.from_numpy(arrays[k]).to(device) for k in arrays.files}
        shared = tensors.get("shared_factors")
        return cls(
            noise=NoiseBank(tensors["noise_factors"], tensors["noise_diag"]),
            shared_factors=shared,
            temperature=float(tensors["temperature"]),
            top_k=int(tensors["top_k"]),
            num_confusable=int(tensors["num_confusable"]),
        )


class ServedHead:
    """Latent tensors (by backbone output name) -> ``ServingOutputs``; see module doc."""

    def __init__(self, constants: HeadConstants, *, impl: Impl = "auto") -> None:
        self.constants = constants
        self.impl = impl

    @classmethod
    def load(
        cls, path: Path, *, device: torch.device | str = "cpu", impl: Impl = "auto"
    ) -> ServedHead:
        return cls(HeadConstants.load(path, device=device), impl=impl)

    def latent(self, tensors: dict[str, Tensor]) -> LatentGaussian:
        """The LatentGaussian the backbone's outputs describe."""
        missing = [name for name in self.constants.latent_names if name not in tensors]
        if missing:
            raise UnsupportedHead(f"the head needs backbone outputs {missing}")
        mean, scale = tensors[LATENT_MEAN], tensors[LATENT_SCALE]
        if self.constants.shared_factors is not None:
            return LatentGaussian(mean, scale, factor_scale=tensors[LATENT_FACTOR_SCALE],
                                  shared_factors=self.constants.shared_factors)
        return LatentGaussian(mean, scale, tensors.get(LATENT_FACTORS))

    @torch.no_grad()
    def run(self, tensors: dict[str, Tensor]) -> ServingOutputs:
        """The head's outputs for one batch, in ``HEAD_OUTPUTS`` order."""
        latent = self.latent(tensors)
        c = self.constants
        result = mc_head(latent, c.noise, c.temperature, top_k=c.top_k, impl=self.impl)
        topk_corr, conf_ids, conf_share = correlation_outputs(
            latent, c.noise, c.temperature, result.probs, result.topk_ids, c.num_confusable
        )
        return ServingOutputs(
            topk_ids=result.topk_ids,
            topk_probs=result.topk_probs,
            predictive_entropy=result.predictive_entropy,
            expected_entropy=result.expected_entropy,
            mutual_information=result.mutual_information,
            topk_correlation=topk_corr,
            confusable_ids=conf_ids,
            confusable_share=conf_share,
            probs=result.probs,
            latent_probs=latent_link(latent.mean, c.temperature, link="softmax"),
        )


def correlation_outputs(
    latent: LatentGaussian,
    noise: NoiseBank,
    temperature: float,
    probs: Tensor,
    topk_ids: Tensor,
    num_confusable: int,
) -> CorrelationOutputs:
    """``topk_correlation`` [B, k, k], ``confusable_ids`` and ``confusable_share`` [B, k, m]
    by the same rule as the ONNX head (``hetexport.class_correlation``): the fused ensemble
    serves softmax heads only (``het``, ``het_pe``; see ``hetexport.fused.ensemble``), so the
    latent correlation is that of ``C Sigma C`` and the shares are
    ``max(0, -C_ij) / sum_l max(0, -C_il)``, ``C = Cov_s(p)`` over the same bank's samples,
    withheld by the same standard errors, here streamed in chunks (``chunked_movement``)
    instead of held as [B, S, K]."""
    move = chunked_movement(latent, noise, temperature, probs, topk_ids)
    estimate = share_estimate(move.rows, move.half_rows, move.variance_error, topk_ids,
                              rule=SOFTMAX_RULE)
    ids, values = withheld_shares(estimate, topk_ids, num_confusable=num_confusable)
    corr = topk_correlation(latent, topk_ids, rule=SOFTMAX_RULE)
    return CorrelationOutputs(corr.float(), ids, values.float())


OUTPUT_DTYPES: dict[str, torch.dtype] = {
    spec.name.value: getattr(torch, spec.numpy_dtype) for spec in HEAD_OUTPUTS
}
"""Each output's dtype per the contract (int64 ids, fp32 everything else)."""
