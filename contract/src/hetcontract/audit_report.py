"""Write an audit's files beside its CSV: the summary (JSON and text), an HTML page and a PNG
sheet of the most suspicious images.

Typical usage::

    files = write_audit_files("audit.csv", rows, summary)
    files.csv, files.summary_json        # audit.csv, audit.summary.json
    files.page, files.sheet              # audit.html, audit.png
    print(summary_text(summary))

The page embeds each shown image's file (base64, as it is on disk), most suspicious first,
with its given and suggested labels, score and kind, after the summary and the
given-vs-suggested matrix. The sheet is the same images as one PNG (a grid of thumbnails, each
captioned "given > suggested" and P(wrong)), to attach to a ticket or a chat; it needs pillow
(the ``audit`` extra) and shows a grey tile for a file it cannot read.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from hetcontract.audit import AuditRow, AuditSummary, write_audit_csv

SUMMARY_SUFFIX = ".summary.json"
PAGE_SUFFIX = ".html"
SHEET_SUFFIX = ".png"
DEFAULT_PAGE_IMAGES = 100
"""How many of the most suspicious images the page shows."""
DEFAULT_SHEET_IMAGES = 48
"""How many of the most suspicious images the PNG sheet shows."""
SHEET_COLUMNS = 8
THUMBNAIL_PX = 112
CAPTION_PX = 30
"""Two caption lines under each thumbnail."""
TILE_GAP_PX = 6
MAX_EMBEDDED_BYTES = 2 * 1024 * 1024
"""A larger image file is linked by its path instead of embedded."""


class AuditFiles(NamedTuple):
    """The files of one audit: the CSV and, beside it with the CSV's stem, the summary JSON,
    the HTML page and the PNG sheet."""

    csv: Path
    summary_json: Path
    page: Path
    sheet: Path


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
    sheet_images: int = DEFAULT_SHEET_IMAGES,
) -> AuditFiles:
    """The CSV, ``<stem>.summary.json``, ``<stem>.html`` and ``<stem>.png`` (module doc)."""
    csv_file = write_audit_csv(csv_path, rows)
    summary_file = companion(csv_path, SUMMARY_SUFFIX)
    summary_file.write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    worst = most_suspicious(rows, max(page_images, sheet_images))  # one sort for both
    page = companion(csv_path, PAGE_SUFFIX)
    page.write_text(audit_page(worst[:page_images], summary), encoding="utf-8")
    sheet = companion(csv_path, SHEET_SUFFIX)
    audit_sheet(worst[:sheet_images]).save(sheet, format="PNG")
    return AuditFiles(csv_file, summary_file, page, sheet)


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


def audit_page(worst: Sequence[AuditRow], summary: AuditSummary) -> str:
    """The HTML page: summary, given-vs-suggested matrix, and the images of ``worst`` in
    its order (``most_suspicious``' rows: the most suspicious first)."""
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


def most_suspicious(rows: Sequence[AuditRow], count: int) -> list[AuditRow]:
    """The ``count`` rows with the highest P(wrong), highest first (input order on ties)."""
    return sorted(rows, key=lambda row: -row.score)[:count]


def audit_sheet(worst: Sequence[AuditRow]) -> Image.Image:
    """The PNG sheet: the images of ``worst`` in its order (``most_suspicious``' rows) as
    captioned thumbnails (module doc)."""
    columns = max(1, min(SHEET_COLUMNS, len(worst)))
    lines = max(1, -(-len(worst) // columns))
    tile_w, tile_h = THUMBNAIL_PX + TILE_GAP_PX, THUMBNAIL_PX + CAPTION_PX + TILE_GAP_PX
    sheet = Image.new("RGB", (columns * tile_w + TILE_GAP_PX, lines * tile_h + TILE_GAP_PX),
                      "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, row in enumerate(worst):
        left = TILE_GAP_PX + (index % columns) * tile_w
        top = TILE_GAP_PX + (index // columns) * tile_h
        sheet.paste(_thumbnail(row.path), (left, top))
        caption = (f"{row.given_label} > {row.suggested_label}", f"P(wrong) {row.score:.2f}")
        for number, text in enumerate(caption):
            draw.text((left, top + THUMBNAIL_PX + 2 + 14 * number), _fit(draw, text, font),
                      fill="black", font=font)
    return sheet


def _thumbnail(path: str) -> Image.Image:
    """The image scaled to fit the tile (nearest neighbour: small images stay crisp), on grey;
    a plain grey tile when the file cannot be read."""
    tile = Image.new("RGB", (THUMBNAIL_PX, THUMBNAIL_PX), (230, 230, 230))
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except (OSError, UnidentifiedImageError):
        return tile
    scale = THUMBNAIL_PX / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    picture = picture.resize(size, Image.Resampling.NEAREST)
    tile.paste(picture, ((THUMBNAIL_PX - size[0]) // 2, (THUMBNAIL_PX - size[1]) // 2))
    return tile


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
         ) -> str:
    """``text`` cut (with an ellipsis) to the thumbnail's width."""
    if draw.textlength(text, font=font) <= THUMBNAIL_PX:
        return text
    while text and draw.textlength(text + "...", font=font) > THUMBNAIL_PX:
        text = text[:-1]
    return text + "..."


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
