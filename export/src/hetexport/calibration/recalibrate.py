"""Calibrate a model in a Triton model repository: the stage after the export (``hetexport
export --calibration-images``, the demo) or on its own later (new labelled images, no
re-export: ``hetexport calibrate``).

Typical usage::

    model_dir = Path("model_repo/fashion_het")
    card = read_card(model_dir)
    held_out = load_calibration_set(Path("labelled/"), card.input, list(card.labels),
                                    label_source="clean")
    card = recalibrate_model(model_dir, held_out)

The newest version's ``model.onnx`` (or a given version's) is run on the images; the model card
gains (or replaces) its ``calibration`` section, in ``model_card.json`` and in
``config.pbtxt``'s ``model_card`` parameter (written by ``hetexport.repo.layout.replace_card``:
the model directory swapped in at once). A running ``hetgateway serve`` picks it up when Triton
reloads the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from hetcontract import MODEL_CARD_FILENAME, InputSpec, ModelCard
from pydantic import ValidationError

from hetexport.calibration.calibrate import CalibrationSet, calibrate_graph
from hetexport.calibration.labelled_images import load_labelled_images
from hetexport.errors import ExportError
from hetexport.repo.layout import MODEL_FILENAME, existing_versions, replace_card

LABEL_SOURCES = ("auto", "noisy", "clean", "unknown")


def read_card(model_dir: Path) -> ModelCard:
    """The model card of an exported model, without its calibration section (replaced whole,
    even one an older contract wrote); ExportError when there is none to read."""
    try:
        fields = json.loads((Path(model_dir) / MODEL_CARD_FILENAME).read_text(encoding="utf-8"))
        fields.pop("calibration", None)
        return ModelCard.model_validate(fields)
    except (OSError, ValueError, ValidationError) as exc:
        raise ExportError(f"{model_dir} has no readable model card: {exc}") from exc


def load_calibration_set(directory: Path, spec: InputSpec, class_names: list[str], *,
                         label_source: str = "auto", limit: int | None = None) -> CalibrationSet:
    """Labelled held-out images (``load_labelled_images``) as a ``CalibrationSet``;
    ``label_source`` "auto": clean for the Fashion-MNIST test split, else unknown."""
    if label_source not in LABEL_SOURCES:
        raise ExportError(f"label source {label_source!r} is not one of {LABEL_SOURCES}")
    held_out = load_labelled_images(directory, spec, list(class_names), limit=limit)
    if label_source == "auto":
        label_source = "clean" if held_out.clean_labels else "unknown"
    return CalibrationSet(images=held_out.images.numpy(), labels=held_out.labels,
                          label_source=label_source, source=held_out.source)


def recalibrate_model(model_dir: Path, held_out: CalibrationSet, *,
                      version: int | None = None) -> ModelCard:
    """The model card of ``model_dir`` with a fresh calibration section, written back
    (``hetexport.repo.layout.replace_card``); the thresholds come from ``version``'s
    ``model.onnx`` (None: the newest version's)."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    onnx = model_onnx(model_dir, version)
    section = calibrate_graph(onnx, held_out, heteroscedastic=card.head != "det")
    card = card.model_copy(update={"calibration": section})
    replace_card(model_dir, card)
    return card


def model_onnx(model_dir: Path, version: int | None = None) -> Path:
    """``<model_dir>/<version>/model.onnx`` (None: the newest version holding one)."""
    versions = [number for number in existing_versions(model_dir)
                if (model_dir / str(number) / MODEL_FILENAME).is_file()]
    if version is None and versions:
        version = versions[-1]
    if version is None or version not in versions:
        raise ExportError(f"{model_dir} holds no {version or '<version>'}/{MODEL_FILENAME}")
    return model_dir / str(version) / MODEL_FILENAME
