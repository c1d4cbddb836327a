"""The demo report: HET vs deterministic figures, the correlation ranking, JSON and Markdown.

Typical usage::

    summary = summarize_runs(runs)                   # per head: mean and std over seeds
    ranking = rank_class_pairs(corr, labels, groups, most_negative_first=True)
    write_report(report_dict, markdown_text, report_dir)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hetexport.metrics import Metrics

REPORT_JSON = "demo_report.json"
REPORT_MARKDOWN = "demo_report.md"
METRIC_NAMES = ("top1", "nll", "ece")


class SeedRun(NamedTuple):
    """One trained model: which head, which seed, its best epoch and its scores."""

    head: str
    seed: int
    best_epoch: int
    seconds: float
    validation: Metrics
    test: Metrics


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


def _cell(summary: MetricSummary, *, percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    digits = 2 if percent else 4
    return f"{scale * summary.mean:.{digits}f} ± {scale * summary.std:.{digits}f}"


def comparison_table(summary: Mapping[str, Mapping[str, MetricSummary]]) -> str:
    """Markdown table: one row per head, top-1 (%), NLL, ECE as mean ± std."""
    lines = ["| head | top-1 (%) | NLL (nats) | ECE (15 bins) |", "|---|---|---|---|"]
    for head, metrics in summary.items():
        lines.append(
            f"| {head} | {_cell(metrics['top1'], percent=True)} | "
            f"{_cell(metrics['nll'], percent=False)} | {_cell(metrics['ece'], percent=False)} |"
        )
    return "\n".join(lines)


def ranking_table(
    ranking: Sequence[PairCorrelation],
    *,
    rows: int,
    heading: str = "mean correlation",
    compare: np.ndarray | None = None,
    compare_heading: str = "raw correlation",
) -> str:
    """Markdown table of the first ``rows`` pairs of a ranking; with ``compare`` [K, K] an
    extra column shows that matrix's value for the same pair (e.g. the raw correlation next
    to the centred one)."""
    extra_head, extra_rule = (f" {compare_heading} |", "---|") if compare is not None else ("", "")
    lines = [f"| rank | pair | {heading} |{extra_head} within a noisy group |",
             f"|---|---|---|{extra_rule}---|"]
    for rank, pair in enumerate(ranking[:rows], start=1):
        mark = "yes" if pair.within_noisy_group else "no"
        extra = f" {compare[pair.first, pair.second]:+.3f} |" if compare is not None else ""
        lines.append(
            f"| {rank} | {pair.first_label} / {pair.second_label} | {pair.correlation:+.3f} |"
            f"{extra} {mark} |"
        )
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    """NamedTuples to dicts, numpy to lists/floats, paths to strings, recursively."""
    if hasattr(value, "_asdict"):
        return {key: to_jsonable(item) for key, item in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: Mapping[str, Any], markdown: str, report_dir: Path, *,
                 json_name: str = REPORT_JSON,
                 markdown_name: str = REPORT_MARKDOWN) -> tuple[Path, Path]:
    """Write ``json_name`` and ``markdown_name`` (the demo's by default) into ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / json_name
    json_path.write_text(json.dumps(to_jsonable(report), indent=2, sort_keys=False) + "\n")
    markdown_path = report_dir / markdown_name
    markdown_path.write_text(markdown)
    return json_path, markdown_path
