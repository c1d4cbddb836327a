"""The studies' reports as files: Markdown tables and the JSON + Markdown pair.

Typical usage::

    comparison_table(summary)                        # one row per head, mean ± std
    ranking_table(ranking, rows=10)                  # the first pairs of a ranking
    write_report(report_dict, markdown_text, report_dir)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hetexport.jsonable import to_jsonable
from hetexport.studies.summary import MetricSummary, PairCorrelation

REPORT_JSON = "demo_report.json"
REPORT_MARKDOWN = "demo_report.md"


class StudyReport(NamedTuple):
    """The files a study's report writer wrote: JSON, Markdown and the plots by name."""

    report_json: Path
    report_markdown: Path
    plots: dict[str, Path]


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


def write_report(report: Mapping[str, Any], markdown: str, report_dir: Path, *,
                 plots: Mapping[str, Path], json_name: str = REPORT_JSON,
                 markdown_name: str = REPORT_MARKDOWN) -> StudyReport:
    """Write ``json_name`` and ``markdown_name`` (the demo's by default) into ``report_dir``,
    beside the ``plots`` drawn there."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / json_name
    json_path.write_text(json.dumps(to_jsonable(report), indent=2, sort_keys=False) + "\n")
    markdown_path = report_dir / markdown_name
    markdown_path.write_text(markdown)
    return StudyReport(json_path, markdown_path, dict(plots))
