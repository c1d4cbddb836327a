"""The training loop: minibatch AdamW on the head's own loss, scored on a validation split.

Typical usage::

    model = build_model(spec)
    result = train_model(model, train_images, train_labels, val_images, val_labels,
                         config=TrainConfig(epochs=4, seed=0))
    result.best_epoch, result.history[-1].validation

Images are float32 ``[N, C, H, W]`` already normalised (``hetexport.data.normalize``); labels
int64 ``[N]``. The model must return a ``HeadOutput`` and its ``head`` must have
``loss(output, targets)`` (the HET loss ``-log clip(p_bar[y], 1e-7, 1)`` for softmax heads).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from hetexport.metrics import Metrics, classification_metrics
from hetexport.training.config import TrainConfig
from hetexport.training.evaluation import predict


class EpochRecord(NamedTuple):
    """One epoch: 1-based ``epoch``, mean training ``loss`` over its steps, and the metrics on
    the validation split (noisy labels for the demo)."""

    epoch: int
    loss: float
    validation: Metrics


class TrainResult(NamedTuple):
    """``model`` holds the weights of ``best_epoch`` (lowest validation NLL); ``history`` has
    every epoch run (fewer than ``TrainConfig.epochs`` when the patience ran out);
    ``seconds`` is the wall time of the whole run."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    seconds: float

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]


def _lr_factor(step: int, total_steps: int) -> float:
    """Cosine decay from 1 to 0 over ``total_steps``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _train_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    *,
    config: TrainConfig,
    description: str,
) -> float:
    model.train()
    order = torch.randperm(images.shape[0], generator=generator)
    batches = range(0, images.shape[0], config.batch_size)
    total, steps = 0.0, 0
    bar = tqdm(batches, desc=description, disable=not config.progress, leave=False)
    for start in bar:
        index = order[start : start + config.batch_size]
        output = model(images[index])
        loss = model.head.loss(output, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach())
        steps += 1
        bar.set_postfix(loss=f"{total / steps:.4f}")
    return total / max(steps, 1)


def train_model(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    config: TrainConfig,
) -> TrainResult:
    """Train ``model`` in place for at most ``config.epochs`` epochs (fewer once the validation
    NLL has not improved for ``config.patience`` epochs) and restore its best epoch.

    Seeding: ``torch.manual_seed(config.seed)`` before the loop (dropout, MC noise) and a
    separate generator for the minibatch order; ``torch.set_num_threads(config.num_threads)``;
    deterministic algorithms while it runs when ``config.deterministic``.
    """
    with deterministic_algorithms(config.deterministic):
        return _train(model, train_images, train_labels, val_images, val_labels, config=config)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` inside, the previous setting after
    (warnings, not errors, for an operation that has no deterministic version)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def _train(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    config: TrainConfig,
) -> TrainResult:
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(train_images.shape[0] / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps)
    )
    history: list[EpochRecord] = []
    best_state, best_nll, best_epoch = copy.deepcopy(model.state_dict()), math.inf, 1
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(
            model, train_images, train_labels, optimizer, scheduler, generator,
            config=config, description=f"epoch {epoch}/{config.epochs}",
        )
        scores = classification_metrics(
            predict(model, val_images, batch_size=config.eval_batch_size).probs,
            val_labels.numpy(),
        )
        history.append(EpochRecord(epoch, loss, scores))
        if config.progress:
            tqdm.write(
                f"epoch {epoch}: loss {loss:.4f}  val top1 {scores.top1:.4f} "
                f"nll {scores.nll:.4f} ece {scores.ece:.4f}"
            )
        if scores.nll < best_nll:  # strict: the first epoch of a tie stays the best
            best_state, best_nll, best_epoch = copy.deepcopy(model.state_dict()), scores.nll, epoch
        elif config.patience is not None and epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    return TrainResult(model, history, best_epoch, time.perf_counter() - started)
