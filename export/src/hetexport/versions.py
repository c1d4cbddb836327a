"""A new version of a served model: export it beside the versions already in the repository.

``export_version`` exports a checkpoint exactly as ``export_to_repository`` does (same ONNX
graph, same parity checks), then writes ``model_repo/<name>/<N>/model.onnx`` beside the
existing version directories, with the model card, labels and ``config.pbtxt`` of version N
(the card's ``version`` is N, in its file and in the config's ``model_card`` parameter). The
whole model directory is swapped in at once (``_write_model_dir``), so a server watching the
repository never sees half a version. Triton serves the newest version (its default version
policy, latest 1); the older directories stay for a roll-back (delete the newest one).

Typical usage::

    report = export_version("runs/mine_v2.pt", Path("model_repo"), "mine")   # N = newest + 1
    report.version, report.export.parity.max_abs_diff
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hetcontract import MODEL_CARD_FILENAME

from hetexport.errors import ExportError
from hetexport.model import HetClassifier
from hetexport.onnx.export import (
    LABELS_FILENAME,
    MODEL_FILENAME,
    ExportReport,
    _write_model_dir,
    export_to_repository,
)
from hetexport.repository import CONFIG_FILENAME, ConfigParseError, config_with_card


@dataclass(frozen=True)
class VersionReport:
    """The version written, the model directory, and the export (parity figures, card)."""

    version: int
    model_dir: Path
    export: ExportReport


def existing_versions(model_dir: Path) -> list[int]:
    """The numeric version directories of a model directory, ascending (none: empty)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_version(
    checkpoint_or_model: str | os.PathLike[str] | HetClassifier,
    model_repo: str | os.PathLike[str],
    name: str,
    *,
    version: int | None = None,
    **export_options: Any,
) -> VersionReport:
    """Export as version ``version`` (default: the newest existing + 1, or 1) of ``name``.

    ``export_options`` are ``export_to_repository``'s. Raises ExportError (and changes
    nothing) when the version exists already or the export fails its checks.
    """
    model_dir = Path(model_repo) / name
    existing = existing_versions(model_dir)
    number = version if version is not None else (existing[-1] + 1 if existing else 1)
    if number < 1 or number in existing:
        raise ExportError(
            f"version {number} of {name!r} exists already (versions: {existing}); "
            "choose another --version"
        )
    with tempfile.TemporaryDirectory(prefix=f".{name}.export.", dir=_parent(model_dir)) as tmp:
        report = export_to_repository(checkpoint_or_model, Path(tmp), name, **export_options)
        card = report.card.model_copy(update={"version": str(number)})
        files: dict[str, bytes] = {
            f"{number}/{MODEL_FILENAME}": report.onnx_path.read_bytes(),
            MODEL_CARD_FILENAME: (card.model_dump_json(indent=2) + "\n").encode(),
            LABELS_FILENAME: report.labels_path.read_bytes(),
            CONFIG_FILENAME: _config_with_card(report.config_path, card.model_dump_json()),
        }
        for old in existing:
            for path in sorted((model_dir / str(old)).rglob("*")):
                if path.is_file():
                    files[str(path.relative_to(model_dir))] = path.read_bytes()
        written = _write_model_dir(Path(model_repo), name, files)
    moved = replace(
        report, model_dir=written, onnx_path=written / str(number) / MODEL_FILENAME,
        config_path=written / CONFIG_FILENAME, card_path=written / MODEL_CARD_FILENAME,
        labels_path=written / LABELS_FILENAME, card=card,
    )
    return VersionReport(version=number, model_dir=written, export=moved)


def _config_with_card(config_path: Path, card_json: str) -> bytes:
    try:
        return config_with_card(config_path.read_text(encoding="utf-8"), card_json).encode()
    except ConfigParseError as exc:  # the exporter wrote it: a bug, not the user's mistake
        raise ExportError(f"cannot re-read the exported {config_path}: {exc}") from exc


def _parent(model_dir: Path) -> Path:
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    return model_dir.parent

