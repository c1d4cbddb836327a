"""``hetexport audit --image-folder DIR``: audit the labels of a training set.

Typical usage::

    files = audit_image_folder("photos/", "audit.csv", model=HetModelOptions(),
                               config=TrainConfig(epochs=5), folds=4)

Every image of ``DIR/<class>/<image>`` gets out-of-sample probabilities from k-fold models
(``hetexport.audit.kfold``); the labels are scored and written by ``hetcontract``'s audit
(the same CSV, summary and page as ``hetclient audit``), with the model's noise-free
``latent_probs`` as the clean-class distribution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetcontract import InputSpec
from hetcontract.audit import DEFAULT_THRESHOLD, AuditSummary
from hetcontract.audit_report import AuditFiles, write_audit_files
from hetcontract.audit_scoring import run_audit

from hetexport.audit.kfold import DEFAULT_FOLDS, out_of_sample_probs
from hetexport.data import load_image_folder, normalize
from hetexport.data.image_folder import image_folder_files
from hetexport.model import ModelSpec
from hetexport.training import TrainConfig
from hetexport.training.experiment import channel_statistics

PIXEL_SCALE = 255.0


@dataclass(frozen=True, kw_only=True)
class FoldModel:
    """The model each fold trains: head, backbone and input size (as ``hetexport train``)."""

    head: str = "het"
    num_factors: int = 6
    temperature: float = 0.5
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 28
    channels: str = "L"
    train_mc_samples: int = 100
    eval_mc_samples: int = 1000


def audit_image_folder(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: FoldModel,
    config: TrainConfig,
    folds: int = DEFAULT_FOLDS,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
) -> tuple[AuditSummary, AuditFiles, float]:
    """Train the fold models, score every label, write the audit files; the summary, the
    files and the seconds the folds took."""
    count = 1 if model.channels == "L" else 3
    probe = InputSpec(shape=(count, model.image_size, model.image_size), mean=(0.0,) * count,
                      std=(1.0,) * count, channel_order=model.channels)
    dataset = load_image_folder(folder, input_spec=probe)
    _, files = image_folder_files(folder)
    mean, std = channel_statistics(dataset.images, scale=PIXEL_SCALE)
    spec_input = probe.model_copy(update={"mean": mean, "std": std})
    spec = ModelSpec(
        num_classes=dataset.num_classes, head=model.head, backbone=model.backbone,
        backbone_kwargs=model.backbone_kwargs,
        num_factors=model.num_factors if model.head != "det" else 0,
        temperature=model.temperature, train_mc_samples=model.train_mc_samples,
        eval_mc_samples=model.eval_mc_samples, labels=dataset.class_names, input=spec_input,
    )
    oos = out_of_sample_probs(normalize(dataset.images, spec_input), dataset.labels, spec,
                              folds=folds, config=config, seed=seed)
    rows, summary = run_audit(
        [str(path) for path, _ in files], dataset.labels.numpy(), list(dataset.class_names),
        noisy_probs=oos.probs, clean_probs=oos.latent_probs,
        model=f"{folds}-fold {model.head} ({model.backbone})", threshold=threshold,
    )
    return summary, write_audit_files(Path(output), rows, summary), oos.seconds
