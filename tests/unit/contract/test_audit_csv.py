"""The audit's CSV (one writer, one parser), summary, page and PNG sheet."""

from __future__ import annotations

import csv
import json

import pytest
from hetcontract.audit import (
    FIXED_COLUMNS,
    AuditRow,
    columns,
    read_audit_csv,
    summarize,
    write_audit_csv,
)
from hetcontract.audit_report import summary_text, write_audit_files

LABELS = ["cat", "dog", "bird"]


def row(path: str, given: int, suggested: int, score: float, *, latent: bool = True,
        kind: str | None = None) -> AuditRow:
    flagged = suggested != given
    return AuditRow(
        path=path, given_label=LABELS[given], given_id=given,
        suggested_label=LABELS[suggested], suggested_id=suggested, score=score,
        flagged=flagged, kind=kind or ("confusion" if flagged else "ok"),
        probs=[0.2, 0.3, 0.5], latent_probs=[0.1, 0.1, 0.8] if latent else None,
    )


def test_rows_round_trip_through_the_csv(tmp_path):
    rows = [row("a, with comma.png", 0, 2, 0.91), row("b.png", 1, 1, 0.02, kind="ok")]
    path = write_audit_csv(tmp_path / "audit.csv", rows)
    assert read_audit_csv(path) == rows
    header = next(csv.reader(path.open()))
    assert header == [*FIXED_COLUMNS, "prob_0", "prob_1", "prob_2",
                      "latent_prob_0", "latent_prob_1", "latent_prob_2"]
    assert "true" in path.read_text() and "false" in path.read_text()


def test_a_model_without_latent_probs_writes_no_latent_columns(tmp_path):
    path = write_audit_csv(tmp_path / "a.csv", [row("a.png", 0, 0, 0.1, latent=False)])
    assert next(csv.reader(path.open())) == columns(3, latent=False)
    assert read_audit_csv(path)[0].latent_probs is None


def test_rows_of_different_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="other columns"):
        write_audit_csv(tmp_path / "a.csv", [row("a", 0, 0, 0.1), row("b", 0, 0, 0.1,
                                                                       latent=False)])
    with pytest.raises(ValueError, match="at least one row"):
        write_audit_csv(tmp_path / "a.csv", [])


def test_another_csv_is_not_read_as_an_audit(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("path,label\na.png,cat\n")
    with pytest.raises(ValueError, match="not an audit CSV"):
        read_audit_csv(other)


def test_summary_counts_the_given_vs_suggested_matrix_and_top_confusions():
    rows = [row("a", 0, 2, 0.9), row("b", 0, 2, 0.8), row("c", 1, 0, 0.7, kind="outlier"),
            row("d", 1, 1, 0.1, kind="ok")]
    summary = summarize(rows, LABELS, model="m", source="latent_probs", threshold=0.5)
    assert summary.matrix == [[0, 0, 2], [1, 1, 0], [0, 0, 0]]
    assert [(c.given, c.suggested, c.count) for c in summary.top_confusions] == [
        ("cat", "bird", 2), ("dog", "cat", 1)]
    assert summary.flagged == 3 and summary.kinds == {"ok": 1, "confusion": 2, "outlier": 1}
    assert summary.estimated_wrong_share == pytest.approx((0.9 + 0.8 + 0.7 + 0.1) / 4)
    assert "estimated share of wrong labels: 62.5 %" in summary_text(summary)


def test_files_beside_the_csv_hold_the_summary_and_a_page_of_the_worst_images(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG fake")
    rows = [row(str(image), 0, 2, 0.9), row(str(tmp_path / "gone.png"), 1, 1, 0.1)]
    summary = summarize(rows, LABELS, model="m", source="probs", threshold=0.5)
    files = write_audit_files(tmp_path / "out.csv", rows, summary, page_images=1)
    assert json.loads(files.summary_json.read_text())["flagged"] == 1
    page = files.page.read_text()
    assert page.count("data:image/png;base64,") == 1 and "gone.png" not in page
    assert "cat &rarr; bird" in page


def test_the_png_sheet_shows_the_most_suspicious_images_first_with_a_grey_tile_for_a_lost_file(
        tmp_path):
    from hetcontract.audit_report import (
        SHEET_COLUMNS,
        THUMBNAIL_PX,
        TILE_GAP_PX,
        audit_sheet,
        most_suspicious,
    )
    from PIL import Image

    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (28, 28), (255, 0, 0)).save(red)
    Image.new("L", (10, 40), 0).save(blue)
    rows = [row(str(blue), 0, 0, 0.2, kind="ok"), row(str(red), 0, 2, 0.9),
            row(str(tmp_path / "gone.png"), 1, 2, 0.5)]
    sheet = audit_sheet(most_suspicious(rows, 2))
    assert sheet.width == 2 * (THUMBNAIL_PX + TILE_GAP_PX) + TILE_GAP_PX < SHEET_COLUMNS * 200
    first_tile = (TILE_GAP_PX + THUMBNAIL_PX // 2,) * 2
    second_tile = (2 * TILE_GAP_PX + THUMBNAIL_PX + THUMBNAIL_PX // 2, TILE_GAP_PX + 5)
    assert sheet.getpixel(first_tile) == (255, 0, 0)        # 0.9 first, scaled up
    assert sheet.getpixel(second_tile) == (230, 230, 230)   # 0.5 next: the file is gone


def test_write_audit_files_writes_the_sheet_beside_the_csv(tmp_path):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 128).save(image)
    rows = [row(str(image), 0, 2, 0.9)]
    summary = summarize(rows, LABELS, model="m", source="probs", threshold=0.5)
    files = write_audit_files(tmp_path / "out.csv", rows, summary)
    assert files.sheet == tmp_path / "out.png"
    with Image.open(files.sheet) as sheet:
        assert sheet.format == "PNG" and sheet.width > 28
