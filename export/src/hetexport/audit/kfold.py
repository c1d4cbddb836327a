"""Out-of-sample probabilities of every training image from k models, each trained without it.

Typical usage::

    oos = out_of_sample_probs(images, labels, spec, folds=4, config=TrainConfig(epochs=5))
    oos.probs, oos.latent_probs        # [N, K] each: p_bar and link(mu / tau) of the model
                                       # that never saw image n

The images are cut into ``folds`` seeded, class-stratified folds; for each fold a model is
trained on the others (its best epoch chosen on a seeded hold-out of ``validation_fraction`` of
them, with their given labels, as ``hetexport train`` does) and predicts the fold. A model
that saw an image's label would have learned it (confident learning's point, Northcutt et al.
2021): only out-of-sample probabilities can say a label is wrong.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import torch

from hetexport.backbones import eval_mode
from hetexport.model import ModelSpec
from hetexport.serving.head import latent_link
from hetexport.training import TrainConfig
from hetexport.training.evaluation import EVAL_NOISE_SEED
from hetexport.training.experiment import PreparedData, fit
from hetexport.training.splits import DEFAULT_VALIDATION_FRACTION, holdout_split

DEFAULT_FOLDS = 4
MIN_FOLDS = 2


class OutOfSample(NamedTuple):
    """``probs`` / ``latent_probs`` float64 [N, K] from the fold model that held image n out;
    ``fold`` int64 [N] which fold that was; ``seconds`` spent training and predicting."""

    probs: np.ndarray
    latent_probs: np.ndarray
    fold: np.ndarray
    seconds: float


def fold_assignment(labels: torch.Tensor, folds: int, *, seed: int = 0) -> torch.Tensor:
    """int64 [N]: the fold of each example; within each class a seeded permutation dealt out
    in turn, so every fold holds about 1/folds of each class."""
    if folds < MIN_FOLDS:
        raise ValueError(f"need at least {MIN_FOLDS} folds, got {folds}")
    if labels.shape[0] < folds:
        raise ValueError(f"{labels.shape[0]} images cannot make {folds} folds")
    generator = torch.Generator().manual_seed(seed)
    assignment = torch.empty_like(labels)
    for cls in labels.unique():
        members = torch.nonzero(labels == cls).squeeze(1)
        order = members[torch.randperm(members.shape[0], generator=generator)]
        assignment[order] = torch.arange(order.shape[0]) % folds
    return assignment


def out_of_sample_probs(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: ModelSpec,
    *,
    folds: int = DEFAULT_FOLDS,
    config: TrainConfig,
    seed: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
) -> OutOfSample:
    """Train ``folds`` models (``spec``, ``config``) and predict each one's held-out fold
    (module doc). ``images`` normalised float32 [N, C, H, W], ``labels`` the given int64 [N]."""
    started = time.perf_counter()
    assignment = fold_assignment(labels, folds, seed=seed)
    classes = spec.num_classes
    probs = np.zeros((labels.shape[0], classes))
    latent = np.zeros((labels.shape[0], classes))
    for fold in range(folds):
        held = torch.nonzero(assignment == fold).squeeze(1)
        rest = torch.nonzero(assignment != fold).squeeze(1)
        split = holdout_split(rest.shape[0], validation_fraction=validation_fraction,
                              seed=seed + fold)
        data = PreparedData(
            train_images=images[rest[split.train]], train_labels=labels[rest[split.train]],
            val_images=images[rest[split.validation]], val_labels=labels[rest[split.validation]],
            test_images=None, test_labels=None, class_names=spec.labels,
            input_spec=spec.input, noise=None,
        )
        model = fit(spec, data, config=replace(config, seed=config.seed + fold)).model
        fold_probs, fold_latent = _predict(model, images[held],
                                           batch_size=config.eval_batch_size)
        probs[held.numpy()] = fold_probs
        latent[held.numpy()] = fold_latent
    return OutOfSample(probs, latent, assignment.numpy(), time.perf_counter() - started)


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """p_bar and link(mu / tau) [N, K] in eval mode (seeded MC noise, the caller's RNG kept)."""
    probs, latent = [], []
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_NOISE_SEED)
        for start in range(0, images.shape[0], batch_size):
            out = model(images[start : start + batch_size])
            probs.append(out.probs.double().numpy())
            latent.append(latent_link(out.latent.mean, out.temperature,
                                      link=model.head.link).double().numpy())
    return np.concatenate(probs), np.concatenate(latent)
