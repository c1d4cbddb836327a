"""Average thresholded confidence (ATC; Garg, Balakrishnan, Lipton, Neyshabur, Sedghi, ICLR
2022): a model's accuracy estimated on images without labels.

Typical usage::

    t = atc_threshold(confidence_on_labelled, correct_on_labelled)
    estimate = atc_estimate(confidence_on_new_images, t)    # share of scores >= t

On labelled source images the threshold ``t`` is chosen so that the share of confidences at
least ``t`` equals the top-1 accuracy there (with m wrong answers among n images, ``t`` is the
(m + 1)-th smallest confidence); on new images the share of confidences at least ``t``
estimates their accuracy. Garg et al. use the max probability (ATC-MC) or the negative
entropy (ATC-NE) as the confidence.
"""

from __future__ import annotations

import numpy as np


def atc_threshold(confidences: np.ndarray, correct: np.ndarray) -> float | None:
    """The threshold whose share of ``confidences`` at least it equals the accuracy
    (``correct`` bool per image); None (infinite) when every answer is wrong."""
    values = np.sort(np.asarray(confidences, dtype=np.float64).reshape(-1))
    wrong = int(len(values) - np.count_nonzero(correct))
    if wrong >= len(values):
        return None
    return float(values[wrong])


def atc_estimate(confidences: np.ndarray, threshold: float | None) -> float:
    """The estimated accuracy: the share of ``confidences`` at least ``threshold``."""
    values = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if threshold is None or len(values) == 0:
        return 0.0
    return float(np.mean(values >= threshold))
