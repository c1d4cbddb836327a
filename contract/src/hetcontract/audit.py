"""The label audit's output: one row per image as CSV, and its summary (one writer, one parser).

``hetclient audit`` (a served model) and ``hetexport audit`` (k-fold models over a training
set) both write this format; the scores come from ``hetcontract.audit_scoring``.

Typical usage::

    from hetcontract.audit import AuditRow, read_audit_csv, write_audit_csv

    write_audit_csv("audit.csv", rows, num_classes=10)
    rows = read_audit_csv("audit.csv")
    [row.path for row in rows if row.flagged]

Columns, in order: ``path``, ``given_label``, ``given_id``, ``suggested_label``,
``suggested_id``, ``score`` (P(label wrong | image, label)), ``flagged`` (``true`` /
``false``), ``kind`` (``ok``, ``confusion``: the model's learned label noise explains the
given label, the suggested class is what it was confused with; ``outlier``: nothing the model
knows explains it), ``prob_0`` .. ``prob_{K-1}`` (the model's p_bar, class id order) and, when
the model serves them, ``latent_prob_0`` .. ``latent_prob_{K-1}`` (its noise-free
``link(mu / tau)``). Pure Python and pydantic: no numpy needed to read or write it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_THRESHOLD = 0.5
"""Flag a label when P(wrong) exceeds this: the Bayes decision (more likely wrong than right).
Chosen on development data (Fashion-MNIST test images 5000-9999, never the benchmark's):
0.5 and 0.4 were within 0.01 F1 of each other on average."""
AUDIT_KINDS = ("ok", "confusion", "outlier")
Kind = Literal["ok", "confusion", "outlier"]
FIXED_COLUMNS = (
    "path", "given_label", "given_id", "suggested_label", "suggested_id", "score", "flagged",
    "kind",
)
PROB_PREFIX = "prob_"
LATENT_PROB_PREFIX = "latent_prob_"
TRUE_TEXT = "true"
FALSE_TEXT = "false"
SCORE_DIGITS = 6
"""Decimals written for scores and probabilities."""


class AuditRow(BaseModel):
    """One audited image (see the module doc for the meaning of each field)."""

    model_config = ConfigDict(frozen=True)

    path: str
    given_label: str
    given_id: int = Field(ge=0)
    suggested_label: str
    suggested_id: int = Field(ge=0)
    score: float = Field(ge=0.0, le=1.0)
    flagged: bool
    kind: Kind
    probs: list[float]
    latent_probs: list[float] | None = None


class Confusion(BaseModel):
    """``count`` flagged images given ``given`` whose suggested class is ``suggested``."""

    model_config = ConfigDict(frozen=True)

    given: str
    suggested: str
    count: int


class AuditSummary(BaseModel):
    """What an audit found, over all its rows.

    ``estimated_wrong_share``: the mean P(wrong) (the fitted share of wrong labels);
    ``matrix[g][s]``: images given class g whose suggested class is s (the diagonal holds
    those not flagged), rows and columns in ``labels`` order; ``top_confusions`` its largest
    off-diagonal entries; ``source``: the distribution used as the noise-free class
    distribution (``latent_probs`` or ``probs``, see ``hetcontract.audit_scoring``)."""

    model_config = ConfigDict(frozen=True)

    model: str
    source: str
    images: int
    flagged: int
    threshold: float
    estimated_wrong_share: float
    kinds: dict[str, int]
    labels: list[str]
    matrix: list[list[int]]
    top_confusions: list[Confusion]


def columns(num_classes: int, *, latent: bool) -> list[str]:
    """The CSV header for ``num_classes`` classes, with or without the latent columns."""
    names = [*FIXED_COLUMNS, *(f"{PROB_PREFIX}{k}" for k in range(num_classes))]
    if latent:
        names += [f"{LATENT_PROB_PREFIX}{k}" for k in range(num_classes)]
    return names


def write_audit_csv(path: str | os.PathLike[str], rows: Sequence[AuditRow]) -> Path:
    """Write ``rows`` (all with the same number of classes) as the audit CSV."""
    if not rows:
        raise ValueError("an audit needs at least one row")
    classes = len(rows[0].probs)
    latent = rows[0].latent_probs is not None
    target = Path(path)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns(classes, latent=latent))
        for row in rows:
            if len(row.probs) != classes or (row.latent_probs is not None) != latent:
                raise ValueError(f"row {row.path!r} has other columns than the first row")
            writer.writerow(_cells(row))
    return target


def _cells(row: AuditRow) -> list[str]:
    cells = [
        row.path, row.given_label, str(row.given_id), row.suggested_label,
        str(row.suggested_id), _number(row.score), TRUE_TEXT if row.flagged else FALSE_TEXT,
        row.kind,
    ]
    cells += [_number(p) for p in row.probs]
    cells += [_number(p) for p in row.latent_probs or ()]
    return cells


def _number(value: float) -> str:
    return f"{value:.{SCORE_DIGITS}f}"


def read_audit_csv(path: str | os.PathLike[str]) -> list[AuditRow]:
    """Parse an audit CSV back into rows (``ValueError`` on a file of another format)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[: len(FIXED_COLUMNS)]) != FIXED_COLUMNS:
            raise ValueError(f"{path} is not an audit CSV (its header is {header})")
        probs = [i for i, name in enumerate(header) if name.startswith(PROB_PREFIX)]
        latent = [i for i, name in enumerate(header) if name.startswith(LATENT_PROB_PREFIX)]
        if header != columns(len(probs), latent=bool(latent)):
            raise ValueError(f"{path}: unexpected columns {header}")
        return [_row(cells, probs, latent) for cells in reader if cells]


def _row(cells: list[str], probs: list[int], latent: list[int]) -> AuditRow:
    fields = dict(zip(FIXED_COLUMNS, cells, strict=False))
    if fields["flagged"] not in (TRUE_TEXT, FALSE_TEXT):
        raise ValueError(f"flagged must be {TRUE_TEXT} or {FALSE_TEXT}: {fields['flagged']!r}")
    return AuditRow(
        **{**fields, "flagged": fields["flagged"] == TRUE_TEXT},
        probs=[float(cells[i]) for i in probs],
        latent_probs=[float(cells[i]) for i in latent] if latent else None,
    )


def summarize(
    rows: Iterable[AuditRow], labels: Sequence[str], *, model: str, source: str,
    threshold: float, top: int = 10,
) -> AuditSummary:
    """The summary of an audit's rows (``AuditSummary``); ``top`` confusions kept."""
    rows = list(rows)
    classes = len(labels)
    matrix = [[0] * classes for _ in range(classes)]
    kinds = dict.fromkeys(AUDIT_KINDS, 0)
    for row in rows:
        matrix[row.given_id][row.suggested_id] += 1
        kinds[row.kind] += 1
    pairs = sorted(
        ((matrix[g][s], g, s) for g in range(classes) for s in range(classes)
         if g != s and matrix[g][s]),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    return AuditSummary(
        model=model,
        source=source,
        images=len(rows),
        flagged=sum(row.flagged for row in rows),
        threshold=threshold,
        estimated_wrong_share=sum(row.score for row in rows) / len(rows) if rows else 0.0,
        kinds=kinds,
        labels=list(labels),
        matrix=matrix,
        top_confusions=[
            Confusion(given=labels[g], suggested=labels[s], count=n) for n, g, s in pairs[:top]
        ],
    )
