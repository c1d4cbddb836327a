"""One training run as ``hetexport train`` does it: fit, then the checkpoint and its record.

Typical usage::

    data = prepare_training_data(DEFAULT_FASHION_MNIST_DIR, None, image_size=28,
                                 channel_order="L", noise_rate=0.3)
    record = train_and_save(spec, data, TrainConfig(epochs=4), checkpoint=Path("runs/het.pt"),
                            record_path=Path("runs/het.json"))
    record["metrics"]["test_nll"]

The record (a JSON file) holds the spec, the training settings, the metrics, every epoch's
validation scores, the data sizes and noise, and where the checkpoint went.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hetexport.checkpoint import save_checkpoint
from hetexport.jsonable import to_jsonable
from hetexport.model import ModelSpec
from hetexport.training.config import TrainConfig
from hetexport.training.experiment import Fitted, PreparedData, fit, fitted_metrics


def train_and_save(
    spec: ModelSpec,
    data: PreparedData,
    config: TrainConfig,
    *,
    checkpoint: Path,
    record_path: Path,
    init_weights: Path | None = None,
    noise_rate: float | None = None,
) -> dict[str, Any]:
    """``fit`` ``spec`` on ``data``, save the best epoch's weights to ``checkpoint`` (with the
    metrics) and the run's record to ``record_path``; returns the record."""
    fitted = fit(spec, data, config=config, init_weights=init_weights)
    figures = fitted_metrics(fitted)
    save_checkpoint(checkpoint, fitted.model, metrics=figures)
    record = training_record(spec, config, fitted, data, noise_rate=noise_rate)
    record.update(checkpoint=checkpoint, init_weights=init_weights)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
    return record


def training_record(spec: ModelSpec, config: TrainConfig, fitted: Fitted, data: PreparedData,
                    *, noise_rate: float | None) -> dict[str, Any]:
    """What a run was and what it scored (``noise_rate`` the one asked for; the data say the
    realised one)."""
    noise = data.noise
    return {
        "spec": spec.to_dict(), "train_config": config.to_dict(),
        "metrics": fitted_metrics(fitted),
        "history": fitted.training.history, "seconds": fitted.training.seconds,
        "data": {"train": int(data.train_labels.shape[0]),
                 "validation": int(data.val_labels.shape[0]),
                 "test": None if data.test_labels is None else int(data.test_labels.shape[0]),
                 "noise_rate": None if noise is None else noise_rate,
                 "realised_noise_rate": None if noise is None else noise.realised_rate},
    }
