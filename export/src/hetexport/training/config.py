"""Optimisation settings of one training run (the model's own settings live in ModelSpec)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_EPOCHS = 4
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 2e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_NUM_THREADS = 2
DEFAULT_EVAL_BATCH_SIZE = 500
DEFAULT_TRAIN_MC_SAMPLES = 100
"""MC samples per training step of a HET head trained by ``hetexport train`` and the studies
(a model's spec defaults to ``layers.heads.DEFAULT_MC_SAMPLES`` for both training and
evaluation; fewer samples make a step cheaper and the gradient of log p_bar noisier)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """AdamW with a cosine learning-rate decay over ``epochs`` epochs, seeded.

    After every epoch the model is scored on the (noisy) validation split and the weights of
    the epoch with the lowest validation NLL are kept: that is how the number of epochs is
    chosen, never on test data. With ``patience`` the run also stops once that NLL has not
    improved for ``patience`` epochs in a row (``epochs`` is then the bound, and the budget the
    learning rate decays over); without, it trains all ``epochs``. ``freeze_backbone`` keeps
    the backbone as it is (eval mode, no gradients) and trains the head alone.

    Runs are reproducible bit for bit on one machine: the seed fixes the initialisation, the
    minibatch order and the MC noise, ``num_threads`` the CPU kernels' work split, and
    ``deterministic`` asks torch for deterministic algorithms while training (it matters on
    CUDA; the CPU kernels used here are deterministic for a given thread count).
    """

    epochs: int = DEFAULT_EPOCHS
    patience: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    seed: int = 0
    num_threads: int = DEFAULT_NUM_THREADS
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    progress: bool = True
    freeze_backbone: bool = False
    """Train only the head, on pre-logits computed once (``hetexport.training.frozen``)."""
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs and batch sizes must be >= 1")
        if self.learning_rate <= 0 or self.num_threads < 1:
            raise ValueError("learning_rate must be > 0 and num_threads >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1 (or None: train every epoch)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
