"""Per-input confusable precision: does the first confusable class of the top-1 name a class
that the label noise actually confuses it with?

Pure numpy (no torch): the offline claims (``hetexport.studies.claims``) and a check through the
gateway count the same way.

With noisy groups G_1, G_2, ... (disjoint sets of class ids; for Fashion-MNIST
``FASHION_MNIST_NOISY_GROUPS``: {T-shirt/top, Pullover, Coat, Shirt} and {Sandal, Sneaker,
Ankle boot}), an input n QUALIFIES when its true class y_n and its top-1 class t_n lie in the
same group G; it is a HIT when its first confusable class c_n (of the top-1) lies in G too:

    precision = #{n qualifies and c_n in G(t_n)} / #{n qualifies}

CHANCE is what a first confusable class drawn uniformly from the K - 1 other classes would
score: the mean over qualifying inputs of (|G(t_n)| - 1) / (K - 1).

Typical usage::

    result = group_confusable_precision(labels, top1, first_confusable, groups)
    result.value, result.low, result.high, result.total      # with a Wilson 95 % interval
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hetexport.statistics import DEFAULT_CONFIDENCE, Proportion, wilson_interval

NO_GROUP = -1
NO_CLASS = -1
"""A first confusable id meaning "no class named" (an answer that makes no claim): a miss."""


def group_index(groups: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Per class id, the index of its group, or ``NO_GROUP`` [num_classes]."""
    index = np.full(num_classes, NO_GROUP, dtype=np.int64)
    for number, group in enumerate(groups):
        for cls in group:
            if index[cls] != NO_GROUP:
                raise ValueError(f"class {cls} is in two groups")
            index[cls] = number
    return index


def _as_ids(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    ids = np.asarray(values, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be one id per input [N], got shape {ids.shape}")
    return ids


def qualifying(true_labels: Sequence[int] | np.ndarray, top1_ids: Sequence[int] | np.ndarray,
               groups: Sequence[Sequence[int]], *, num_classes: int) -> np.ndarray:
    """Boolean [N]: the true class and the top-1 lie in the same noisy group."""
    labels, top1 = _as_ids(true_labels, "true_labels"), _as_ids(top1_ids, "top1_ids")
    if labels.shape != top1.shape:
        raise ValueError(f"true_labels {labels.shape} and top1_ids {top1.shape} differ")
    index = group_index(groups, num_classes)
    return (index[labels] != NO_GROUP) & (index[labels] == index[top1])


def group_confusable_precision(
    true_labels: Sequence[int] | np.ndarray,
    top1_ids: Sequence[int] | np.ndarray,
    first_confusable_ids: Sequence[int] | np.ndarray,
    groups: Sequence[Sequence[int]],
    *,
    num_classes: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Proportion:
    """The precision of the module doc with its Wilson interval (``num_classes`` defaults to
    one more than the largest id seen)."""
    labels, top1 = _as_ids(true_labels, "true_labels"), _as_ids(top1_ids, "top1_ids")
    first = _as_ids(first_confusable_ids, "first_confusable_ids")
    if first.shape != top1.shape:
        raise ValueError(f"first_confusable_ids {first.shape} and top1_ids {top1.shape} differ")
    classes = num_classes or int(max(labels.max(initial=0), top1.max(initial=0),
                                     first.max(initial=0), *(max(g) for g in groups))) + 1
    mask = qualifying(labels, top1, groups, num_classes=classes)
    index = group_index(groups, classes)
    named = np.where(first >= 0, index[np.clip(first, 0, None)], NO_GROUP)  # NO_CLASS: a miss
    hits = mask & (named == index[top1])
    return wilson_interval(int(hits.sum()), int(mask.sum()), confidence=confidence)


def chance_precision(true_labels: Sequence[int] | np.ndarray, top1_ids: Sequence[int] | np.ndarray,
                     groups: Sequence[Sequence[int]], *, num_classes: int) -> float:
    """The precision of a uniformly random other class (module doc); NaN if none qualify."""
    top1 = _as_ids(top1_ids, "top1_ids")
    mask = qualifying(true_labels, top1, groups, num_classes=num_classes)
    if not mask.any():
        return float("nan")
    sizes = np.array([len(group) for group in groups])
    return float(np.mean((sizes[group_index(groups, num_classes)[top1[mask]]] - 1)
                         / (num_classes - 1)))


def runner_up_ids(probs: np.ndarray) -> np.ndarray:
    """The class with the second-highest probability per row [N] of probs [N, K] (the
    baseline "confusable" class that needs no noise model)."""
    probs = np.asarray(probs)
    return np.argsort(-probs, axis=1, kind="stable")[:, 1]
