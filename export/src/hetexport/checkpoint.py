"""Save and load trained models: weights plus the ModelSpec that rebuilds them.

A checkpoint is a ``torch.save`` file holding only tensors and strings (so it loads with
``weights_only=True``): ``{"format", "format_version", "spec" (JSON), "metrics" (JSON),
"state_dict"}``. Anything else, a truncated file or weights that do not fit the spec raise
``CheckpointError`` with the reason.

Typical usage::

    save_checkpoint("runs/het.pt", model, metrics={"val_nll": 0.41})
    ckpt = load_checkpoint("runs/het.pt")          # Checkpoint(model, spec, metrics)
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hetexport.errors import CheckpointError, SpecError
from hetexport.model import HetClassifier, ModelSpec, build_model

CHECKPOINT_FORMAT = "hetexport.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the model (eval mode, on CPU unless mapped), its spec and metrics."""

    model: HetClassifier
    spec: ModelSpec
    metrics: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike[str],
    model: HetClassifier,
    *,
    spec: ModelSpec | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write model weights, spec (``spec`` or ``model.spec``) and JSON metrics atomically."""
    spec = spec or model.spec
    if spec is None:
        raise CheckpointError("cannot save a model without a ModelSpec; pass spec=...")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": spec.to_json(),
        "metrics": json.dumps(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights; eval mode.

    Raises CheckpointError when the file is missing, not a torch file, truncated, of another
    format or version, or its weights do not fit the model its spec builds.
    """
    path = Path(path)
    payload = _read_payload(path, map_location)
    spec = _read_spec(path, payload)
    try:
        metrics = json.loads(payload.get("metrics", "{}"))
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: metrics are not valid JSON ({exc})") from exc
    model = build_model(spec)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: weights do not fit the model its spec describes "
            f"(head {spec.head!r}, K={spec.num_classes}, R={spec.num_factors}): {first_line}"
        ) from exc
    model.to(map_location)
    model.eval()
    return Checkpoint(model=model, spec=spec, metrics=metrics)


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        OSError,
        IndexError,  # the legacy (non-zip) unpickler on arbitrary bytes: "pop from empty list"
    ) as exc:
        raise CheckpointError(
            f"{path}: not a readable hetexport checkpoint (corrupt, truncated or not a torch "
            f"file): {type(exc).__name__}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a hetexport checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "write one with hetexport.checkpoint.save_checkpoint"
        )
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, this hetexport reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path}: checkpoint has no state_dict")
    return payload


def _read_spec(path: Path, payload: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.from_dict(json.loads(payload["spec"]))
    except (KeyError, TypeError, json.JSONDecodeError, SpecError) as exc:
        raise CheckpointError(f"{path}: checkpoint spec is missing or invalid ({exc})") from exc
