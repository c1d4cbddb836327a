"""Run a trained classifier over a dataset: MC-averaged probabilities and latent correlations.

Typical usage::

    predictions = predict(model, images)                 # images float32 [N, C, H, W], normalised
    scores = classification_metrics(predictions.probs, labels)
    predictions.mean_correlation                         # [K, K] centred, averaged over N
    predictions.mean_raw_correlation                     # [K, K] raw, for comparison
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from hetexport.backbones import eval_mode
from hetexport.training.config import DEFAULT_EVAL_BATCH_SIZE

EVAL_NOISE_SEED = 1234
"""Seed of the MC noise drawn while evaluating, so the same model gives the same figures."""


class Predictions(NamedTuple):
    """``probs`` float64 ``[N, K]`` (the head's MC-averaged p_bar);
    ``mean_correlation`` float64 ``[K, K]``: ``(1/N) sum_n corr(C Sigma(x_n) C)``, the
    correlation of the centred latent logits (``C = I - 1 1^T / K``; the identifiable part for
    a softmax head, see ``LatentGaussian.centered_covariance_rows``); and
    ``mean_raw_correlation`` ``(1/N) sum_n corr(Sigma(x_n))``, which for a softmax head carries
    the never-learned all-ones component. Both are the identity for a deterministic head."""

    probs: np.ndarray
    mean_correlation: np.ndarray
    mean_raw_correlation: np.ndarray


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    noise_seed: int = EVAL_NOISE_SEED,
) -> Predictions:
    """Evaluate ``model`` (in eval mode, its eval MC sample count) on normalised ``images``.

    The MC noise comes from a torch RNG seeded with ``noise_seed`` inside a forked RNG state, so
    the caller's random stream is untouched and the result is reproducible.
    """
    probs: list[np.ndarray] = []
    centered_sum: torch.Tensor | None = None
    raw_sum: torch.Tensor | None = None
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(noise_seed)
        for start in range(0, images.shape[0], batch_size):
            output = model(images[start : start + batch_size])
            probs.append(output.probs.double().numpy())
            batch, classes = output.probs.shape
            every_class = torch.arange(classes).expand(batch, classes)
            centered = output.latent.correlation_rows(every_class, centered=True)
            raw = output.latent.correlation_rows(every_class, centered=False)
            centered_sum = _accumulate(centered_sum, centered.double().sum(0))
            raw_sum = _accumulate(raw_sum, raw.double().sum(0))
    if centered_sum is None or raw_sum is None:
        raise ValueError("cannot predict on an empty set of images")
    count = images.shape[0]
    return Predictions(np.concatenate(probs), (centered_sum / count).numpy(),
                       (raw_sum / count).numpy())


def _accumulate(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    return value if total is None else total + value
