"""Calibrate a model in a Triton model repository: the stage after the export (``hetexport
export --calibration-images``, the demo) or on its own later (new labelled images, no
re-export: ``hetexport calibrate``).

Typical usage::

    held_out = load_labelled_images(Path("labelled/"), card.input, card.labels)
    card = recalibrate_model(Path("model_repo/fashion_het"), CalibrationSet(
        images=held_out.images.numpy(), labels=held_out.labels, label_source="clean"))

The newest version's ``model.onnx`` is run on the images; the model card gains (or replaces)
its ``calibration`` section, in ``model_card.json`` and in ``config.pbtxt``'s ``model_card``
parameter (each file replaced atomically). A running ``hetgateway serve`` picks it up when
Triton reloads the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hetcontract import MODEL_CARD_FILENAME, ModelCard
from pydantic import ValidationError

from hetexport.calibration.calibrate import CalibrationSet, calibrate_graph
from hetexport.errors import ExportError
from hetexport.repository import CONFIG_FILENAME, ConfigParseError, config_with_card

MODEL_FILENAME = "model.onnx"


def recalibrate_model(model_dir: Path, held_out: CalibrationSet) -> ModelCard:
    """The model card of ``model_dir`` with a fresh calibration section, written back."""
    model_dir = Path(model_dir)
    try:
        fields = json.loads((model_dir / MODEL_CARD_FILENAME).read_text(encoding="utf-8"))
        fields.pop("calibration", None)  # replaced whole, even one an older contract wrote
        card = ModelCard.model_validate(fields)
        config_text = (model_dir / CONFIG_FILENAME).read_text(encoding="utf-8")
    except (OSError, ValueError, ValidationError) as exc:
        raise ExportError(f"{model_dir} is not an exported model: {exc}") from exc
    onnx = newest_model(model_dir)
    section = calibrate_graph(onnx, held_out, heteroscedastic=card.head != "det")
    card = card.model_copy(update={"calibration": section})
    try:
        config = config_with_card(config_text, card.model_dump_json())
    except ConfigParseError as exc:
        raise ExportError(f"cannot read {model_dir / CONFIG_FILENAME}: {exc}") from exc
    _replace(model_dir / MODEL_CARD_FILENAME, card.model_dump_json(indent=2) + "\n")
    _replace(model_dir / CONFIG_FILENAME, config)
    return card


def newest_model(model_dir: Path) -> Path:
    """``<model_dir>/<newest version>/model.onnx``."""
    versions = sorted(int(p.name) for p in model_dir.iterdir()
                      if p.is_dir() and p.name.isdigit() and (p / MODEL_FILENAME).is_file())
    if not versions:
        raise ExportError(f"{model_dir} holds no <version>/{MODEL_FILENAME}")
    return model_dir / str(versions[-1]) / MODEL_FILENAME


def _replace(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
