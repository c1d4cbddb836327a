"""Per-sample softmax statistics: what every MC head implementation computes, without [B, S, K].

For latent logits ``x_sk = u_sk / tau`` of example b (sample s, class k):

* ``probs``          p_bar [B, K] = (1/S) sum_s softmax(x_s)_k
* ``sample_lse``     L_s [B, S]   = logsumexp_k x_sk      (the per-sample normaliser, log Z_s)
* ``sample_entropy`` H_s [B, S]   = -sum_k p_sk log p_sk = L_s - sum_k p_sk x_sk

L_s lets a backward pass rebuild ``p_sk = exp(x_sk - L_s)`` from a recomputed ``x`` alone;
``mean_s H_s`` is the expected entropy. The PyTorch path (``chunked``) and the triton kernel
(``kernel``) both return this type.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class SampleStats(NamedTuple):
    """p_bar [B, K], L_s [B, S] and H_s [B, S], all fp32."""

    probs: Tensor
    sample_lse: Tensor
    sample_entropy: Tensor
