"""Write an audit's files beside its CSV: the summary (JSON and text) and an HTML page of the
most suspicious images.

Typical usage::

    files = write_audit_files("audit.csv", rows, summary)
    files.csv, files.summary_json, files.page          # audit.csv, audit.summary.json, audit.html
    print(summary_text(summary))

The page embeds each shown image's file (base64, as it is on disk: no image library needed),
most suspicious first, with its given and suggested labels, score and kind. Pure Python.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from hetcontract.audit import AuditRow, AuditSummary, write_audit_csv

SUMMARY_SUFFIX = ".summary.json"
PAGE_SUFFIX = ".html"
DEFAULT_PAGE_IMAGES = 100
"""How many of the most suspicious images the page shows."""
MAX_EMBEDDED_BYTES = 2 * 1024 * 1024
"""A larger image file is linked by its path instead of embedded."""


class AuditFiles(NamedTuple):
    csv: Path
    summary_json: Path
    page: Path


def companion(csv_path: str | os.PathLike[str], suffix: str) -> Path:
    """``audit.csv`` -> ``audit<suffix>`` (the CSV's stem, the new suffix)."""
    path = Path(csv_path)
    return path.with_name(path.stem + suffix)


def write_audit_files(
    csv_path: str | os.PathLike[str],
    rows: Sequence[AuditRow],
    summary: AuditSummary,
    *,
    page_images: int = DEFAULT_PAGE_IMAGES,
) -> AuditFiles:
    """The CSV, ``<stem>.summary.json`` and ``<stem>.html`` (see the module doc)."""
    csv_file = write_audit_csv(csv_path, rows)
    summary_file = companion(csv_path, SUMMARY_SUFFIX)
    summary_file.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    page = companion(csv_path, PAGE_SUFFIX)
    page.write_text(audit_page(rows, summary, images=page_images), encoding="utf-8")
    return AuditFiles(csv_file, summary_file, page)


def summary_text(summary: AuditSummary) -> str:
    """A few lines for the terminal: counts, the estimated share, the top confusions."""
    lines = [
        f"{summary.images} images audited with {summary.model} ({summary.source}); "
        f"{summary.flagged} flagged (P(wrong) > {summary.threshold:g}): "
        f"{summary.kinds.get('confusion', 0)} confusions, "
        f"{summary.kinds.get('outlier', 0)} outliers",
        f"estimated share of wrong labels: {100 * summary.estimated_wrong_share:.1f} %",
    ]
    if summary.top_confusions:
        lines.append("top confusions (given -> suggested):")
        lines += [f"  {c.count:6d}  {c.given} -> {c.suggested}" for c in summary.top_confusions]
    return "\n".join(lines)


def audit_page(rows: Sequence[AuditRow], summary: AuditSummary, *, images: int) -> str:
    """The HTML page: summary, given-vs-suggested matrix, the most suspicious images."""
    worst = sorted(rows, key=lambda row: -row.score)[:images]
    cards = "\n".join(_card(row) for row in worst)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>label audit: {html.escape(summary.model)}</title><style>{_STYLE}</style>"
        "</head><body>"
        f"<h1>Label audit: {html.escape(summary.model)}</h1>"
        f"<pre>{html.escape(summary_text(summary))}</pre>"
        f"<h2>Given (rows) vs suggested (columns)</h2>{_matrix(summary)}"
        f"<h2>The {len(worst)} most suspicious images</h2><div class='grid'>{cards}</div>"
        "</body></html>\n"
    )


def _card(row: AuditRow) -> str:
    caption = (
        f"{html.escape(row.given_label)} &rarr; {html.escape(row.suggested_label)}<br>"
        f"P(wrong) {row.score:.2f} &middot; {row.kind}"
    )
    return (
        f"<figure>{_image(row.path)}<figcaption title='{html.escape(row.path, quote=True)}'>"
        f"{caption}</figcaption></figure>"
    )


def _image(path: str) -> str:
    source = Path(path)
    try:
        size = source.stat().st_size
    except OSError:
        return f"<div class='missing'>{html.escape(path)}</div>"
    if size > MAX_EMBEDDED_BYTES:
        return f"<img src='{html.escape(source.resolve().as_uri(), quote=True)}'>"
    media = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
    data = base64.b64encode(source.read_bytes()).decode("ascii")
    return f"<img src='data:{media};base64,{data}'>"


def _matrix(summary: AuditSummary) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in summary.labels)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(
            f"<td class='{'diag' if g == s else ('hit' if n else '')}'>{n}</td>"
            for s, n in enumerate(row)
        )
        + "</tr>"
        for g, (label, row) in enumerate(zip(summary.labels, summary.matrix, strict=True))
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;font-size:12px}"
    "td.diag{color:#999}td.hit{background:#fde2e2}.grid{display:flex;flex-wrap:wrap;gap:8px}"
    "figure{margin:0;width:140px;font-size:12px}img{width:128px;image-rendering:pixelated}"
    ".missing{width:128px;height:128px;background:#eee;overflow:hidden;font-size:10px}"
)
