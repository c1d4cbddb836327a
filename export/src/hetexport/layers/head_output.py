"""The one return type of every head."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from hetexport.layers.gaussian import LatentGaussian


class HeadOutput(NamedTuple):
    """What a head returns, whatever its options.

    Attributes:
        probs: p_bar [B, K], the MC-averaged probabilities (softmax heads: rows sum to 1;
            sigmoid head: K independent marginals).
        log_probs: ``log(clip(p_bar, PROB_EPS, 1))`` [B, K].
        expected_entropy: ``(1/S) sum_s H[link(u_s / tau)]`` [B] (nats).
        predictive_entropy: ``H[p_bar]`` [B] (nats), computed batch-invariantly (see
            ``hetexport.layers.batch_invariant``).
        latent: the latent logit distribution ``N(mu, V V^T + diag(d^2))``.
        temperature: tau, a 0-dim tensor.
        sample_probs: the per-sample ``link(u_s / tau)`` [B, S, K] that ``probs`` averages
            ([B, 1, K] for a deterministic head); None from a head that streams its samples
            (``hetexport.fused``). The served head's confusable classes come from them.
    """

    probs: Tensor
    log_probs: Tensor
    expected_entropy: Tensor
    predictive_entropy: Tensor
    latent: LatentGaussian
    temperature: Tensor
    sample_probs: Tensor | None = None
