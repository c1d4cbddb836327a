"""What the studies compute from trained models: summaries over seeds, class-pair rankings.

Typical usage::

    summary = summarize_runs(runs)                   # per head: mean and std over seeds
    ranking = rank_class_pairs(corr, labels, groups, most_negative_first=True)
    within_group_precision(ranking)                  # share of the top pairs inside a group
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from hetexport.metrics import Metrics

METRIC_NAMES = ("top1", "nll", "ece")


class SeedRun(NamedTuple):
    """One trained model: which head, which seed, its best epoch, its scores and its
    validation NLL after every epoch it ran (empty in reports from before that was kept)."""

    head: str
    seed: int
    best_epoch: int
    seconds: float
    validation: Metrics
    test: Metrics
    validation_nll: tuple[float, ...] = ()

    @property
    def epochs(self) -> int | None:
        """Epochs run (None where not recorded)."""
        return len(self.validation_nll) or None


def seed_run_from_json(data: dict[str, Any]) -> SeedRun:
    """A ``SeedRun`` read back from a report (``to_jsonable`` wrote it as a dict)."""
    return SeedRun(data["head"], data["seed"], data["best_epoch"], data["seconds"],
                   Metrics(**data["validation"]), Metrics(**data["test"]),
                   tuple(data.get("validation_nll", ())))


class SweepPoint(NamedTuple):
    """One model trained at one injected noise rate, scored on the clean test set."""

    head: str
    noise_rate: float
    top1: float
    nll: float


class MetricSummary(NamedTuple):
    """``mean`` and sample ``std`` (ddof=1; 0 for one value) of one metric over seeds."""

    mean: float
    std: float
    values: tuple[float, ...]


class PairCorrelation(NamedTuple):
    """A class pair ``i < j``, its mean latent correlation and whether both are in one group."""

    first: int
    second: int
    first_label: str
    second_label: str
    correlation: float
    within_noisy_group: bool


def summarize(values: Sequence[float]) -> MetricSummary:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return MetricSummary(float(array.mean()), std, tuple(float(v) for v in array))


def summarize_runs(runs: Sequence[SeedRun]) -> dict[str, dict[str, MetricSummary]]:
    """``{head: {metric: MetricSummary}}`` of the clean-test metrics over seeds."""
    heads = sorted({run.head for run in runs})
    return {
        head: {
            name: summarize([getattr(run.test, name) for run in runs if run.head == head])
            for name in METRIC_NAMES
        }
        for head in heads
    }


def rank_class_pairs(
    correlation: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[Sequence[int]],
    *,
    by_magnitude: bool = False,
    most_negative_first: bool = False,
) -> list[PairCorrelation]:
    """All pairs ``i < j`` sorted by ``correlation[i, j]``, highest first; lowest (most
    negative) first with ``most_negative_first`` (the centred correlation of a softmax head,
    where a confused pair trades probability mass); by ``|correlation[i, j]|`` with
    ``by_magnitude``."""
    group_of = {cls: index for index, group in enumerate(groups) for cls in group}
    pairs = [
        PairCorrelation(
            i, j, class_names[i], class_names[j], float(correlation[i, j]),
            i in group_of and group_of.get(i) == group_of.get(j),
        )
        for i in range(len(class_names))
        for j in range(i + 1, len(class_names))
    ]
    if by_magnitude:
        return sorted(pairs, key=lambda pair: abs(pair.correlation), reverse=True)
    return sorted(pairs, key=lambda pair: pair.correlation, reverse=not most_negative_first)


def mean_pair_correlation(ranking: Sequence[PairCorrelation], *, within: bool) -> float:
    """Mean correlation of the pairs inside (``within``) or outside the noisy groups."""
    values = [pair.correlation for pair in ranking if pair.within_noisy_group == within]
    return float(np.mean(values)) if values else float("nan")


def within_group_precision(ranking: Sequence[PairCorrelation]) -> float:
    """Fraction of the top-M pairs that lie within a noisy group, M = number of such pairs
    (1.0: every within-group pair ranks above every other pair)."""
    within = sum(pair.within_noisy_group for pair in ranking)
    if within == 0:
        return 0.0
    return sum(pair.within_noisy_group for pair in ranking[:within]) / within
