"""The model card: what the gateway needs to know to feed a model and explain its answer.

Written by the exporter as ``model_repo/<name>/model_card.json`` and, as JSON, into the
``model_card`` parameter of ``config.pbtxt`` so that Triton exposes it to the gateway.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hetcontract.calibration import Calibration


class InputSpec(BaseModel):
    """How pixels become the ``images`` tensor: ``x = (pixel / scale - mean[c]) / std[c]``.

    ``shape`` is [C, H, W]; ``channel_order`` is ``"L"`` for one grey channel or ``"RGB"``.
    """

    model_config = ConfigDict(frozen=True)

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0
    channel_order: Literal["L", "RGB"] = "L"

    @model_validator(mode="after")
    def _channels_agree(self) -> InputSpec:
        channels = self.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError("mean and std need one value per channel")
        if (channels == 1) != (self.channel_order == "L"):
            raise ValueError("channel_order 'L' goes with 1 channel, 'RGB' with 3")
        if any(s <= 0 for s in self.std) or self.scale <= 0:
            raise ValueError("std and scale must be positive")
        return self


class McError(BaseModel):
    """Error of one served quantity against the exact integral, over held-out images."""

    model_config = ConfigDict(frozen=True)

    mean: float = Field(ge=0)
    p99: float = Field(ge=0)


class MonteCarloSpec(BaseModel):
    """How the served head integrates ``E[link(u / tau)]`` and how exact its numbers are.

    ``design`` names the baked noise bank (``hetexport.layers.noise_bank.BANK_DESIGNS``; "none"
    for a deterministic head), ``samples`` is S and ``seed`` its scrambling seed, the best of
    ``seeds_searched`` candidates on held-out images other than the ``images`` reported on
    (0: not searched). ``error`` holds, per
    served quantity (``probs`` as the max over classes, ``topk_probs``, the entropies, the
    mutual information, ``confusable_share``), the mean and the 99th percentile over
    ``images`` held-out images of |served - exact|, where "exact" is ``reference`` (a
    randomized quasi-Monte Carlo integral whose own standard error, ``reference_error``, is far
    below these). ``requested_p99`` is the p_bar error S was chosen for (``--mc-error``), if any.
    ``shares_withheld`` is the fraction of those images' top classes that the noise moves (an
    exact standard deviation of at least 0.01) whose confusable shares the head withheld
    (``WITHHELD_SHARE``); the ``confusable_share`` error is over the others (None: not
    measured, or an export before shares could be withheld).
    """

    model_config = ConfigDict(frozen=True)

    design: str
    samples: int = Field(ge=1)
    seed: int = 0
    seeds_searched: int = Field(default=0, ge=0)
    images: int = Field(ge=0)
    reference: str = ""
    reference_error: float = Field(default=0.0, ge=0)
    requested_p99: float | None = None
    error: dict[str, McError] = Field(default_factory=dict)
    shares_withheld: float | None = Field(default=None, ge=0, le=1)


class ModelCard(BaseModel):
    """Everything about an exported model that is not in its weights.

    ``head`` names the output layer: ``het`` (softmax, low-rank + diagonal covariance),
    ``het_pe`` (parameter-efficient), ``het_sigmoid`` (multi-label), ``het_xl`` (softmax with
    the noise on the D-dim pre-logits, Collier et al., ICLR 2023; its baked noise bank is
    ``noise_factors`` [S, R] and ``noise_diag`` [S, D] instead of [S, K]) or ``det`` (plain
    softmax).
    ``num_factors`` is R (0 for diagonal-only and deterministic heads), ``mc_samples`` is S
    (1 for a deterministic head), ``top_k`` is k_max and ``num_confusable`` is m;
    ``monte_carlo`` says how the head's integral is computed and how exact it is;
    ``calibration`` holds the thresholds of the served decisions (prediction sets, abstention
    at a stated risk, the label-free accuracy estimate), or None for a model exported without
    labelled calibration images (cards written before it existed parse the same way).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    version: str = "1"
    head: Literal["het", "het_pe", "het_sigmoid", "het_xl", "det"]
    num_classes: int = Field(gt=1)
    labels: list[str]
    num_factors: int = Field(ge=0)
    mc_samples: int = Field(ge=1)
    temperature: float = Field(gt=0)
    top_k: int = Field(ge=1)
    num_confusable: int = Field(ge=0)
    input: InputSpec
    metrics: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    monte_carlo: MonteCarloSpec | None = None
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _sizes_agree(self) -> ModelCard:
        if len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes")
        if self.top_k > self.num_classes:
            raise ValueError("top_k cannot exceed num_classes")
        if self.num_confusable > self.num_classes - 1:
            raise ValueError("num_confusable cannot exceed num_classes - 1")
        if self.calibration is not None:
            self.calibration.check_classes(self.num_classes)
        return self
