"""A classifier = backbone (images -> pre-logits) + head, and the spec that rebuilds it.

Typical usage::

    spec = ModelSpec(num_classes=10, head="het", num_factors=6, temperature=1.5,
                     labels=FASHION_LABELS)
    model = build_model(spec)                          # SmallCNN + HetSoftmaxHead
    out = model(images)                                # HeadOutput

    # your own backbone (anything giving [B, D]):
    model = HetClassifier(my_backbone, HetSoftmaxHead(512, 100, num_factors=15))
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from hetcontract import InputSpec
from torch import Tensor, nn

from hetexport.backbones import build_backbone, eval_mode, feature_dim
from hetexport.errors import SpecError
from hetexport.layers import (
    TEMPERATURE_BOUNDS,
    DeterministicHead,
    HeadOutput,
    HetSigmoidHead,
    HetSoftmaxHead,
    HetXLHead,
    NoiseBank,
)
from hetexport.layers.heads import DEFAULT_MC_SAMPLES, DEFAULT_NUM_FACTORS
from hetexport.validation import validate_images

HEAD_KINDS = ("het", "het_pe", "het_sigmoid", "het_xl", "det")
Head = HetSoftmaxHead | HetSigmoidHead | HetXLHead | DeterministicHead


def default_input() -> InputSpec:
    """28x28 grey, ``x = pixel / 255`` (mean 0, std 1)."""
    return InputSpec(shape=(1, 28, 28), mean=(0.0,), std=(1.0,))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model before its weights are loaded (JSON-serialisable).

    ``backbone`` is a built-in name or ``"package.module:factory"``; ``head`` one of
    ``het`` (softmax, V dense), ``het_pe`` (softmax, V = diag(v) J), ``het_sigmoid`` (multi-
    label), ``het_xl`` (softmax, noise on the D-dim pre-logits, Collier et al., ICLR 2023) or
    ``det`` (plain softmax; R and MC settings unused). ``labels`` defaults to
    ``class_0 .. class_{K-1}``.
    """

    num_classes: int
    head: str = "het"
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    num_factors: int = DEFAULT_NUM_FACTORS
    temperature: float = 1.0
    learn_temperature: bool = False
    temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS
    train_mc_samples: int = DEFAULT_MC_SAMPLES
    eval_mc_samples: int = DEFAULT_MC_SAMPLES
    share_samples_across_batch: bool = True
    labels: tuple[str, ...] = ()
    input: InputSpec = field(default_factory=default_input)

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise SpecError(f"head must be one of {HEAD_KINDS}, got {self.head!r}")
        if self.num_classes < 2:
            raise SpecError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.labels and len(self.labels) != self.num_classes:
            raise SpecError(f"{len(self.labels)} labels for {self.num_classes} classes")
        if not self.labels:
            default = tuple(f"class_{k}" for k in range(self.num_classes))
            object.__setattr__(self, "labels", default)
        object.__setattr__(self, "labels", tuple(self.labels))
        try:  # JSON-normal form (tuples -> lists) so a spec equals its reloaded self
            kwargs = json.loads(json.dumps(dict(self.backbone_kwargs)))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"backbone_kwargs must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "backbone_kwargs", kwargs)
        object.__setattr__(self, "temperature_bounds", tuple(self.temperature_bounds))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input"] = self.input.model_dump(mode="json")
        data["labels"] = list(self.labels)
        data["temperature_bounds"] = list(self.temperature_bounds)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            fields = dict(data)
            fields["input"] = InputSpec.model_validate(fields.get("input", default_input()))
            fields["labels"] = tuple(fields.get("labels", ()))
            fields["temperature_bounds"] = tuple(
                fields.get("temperature_bounds", TEMPERATURE_BOUNDS)
            )
            return cls(**fields)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"invalid model spec: {exc}") from exc


class HetClassifier(nn.Module):
    """``images [B, C, H, W] -> backbone -> phi [B, D] -> head -> HeadOutput``.

    ``spec`` is set by ``build_model`` (and needed to save a checkpoint); a classifier put
    together by hand has ``spec=None`` unless given.
    """

    def __init__(self, backbone: nn.Module, head: Head, *, spec: ModelSpec | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec

    def forward(self, images: Tensor, *, noise: NoiseBank | None = None) -> HeadOutput:
        return self.head(self.backbone(images), noise=noise)

    @torch.no_grad()
    def predict(self, images: Tensor, *, noise: NoiseBank | None = None) -> HeadOutput:
        """Eval-mode forward after ``validate_images`` (clear InputError on a bad batch).

        Needs ``spec`` (for the input shape); leaves the module's train/eval mode unchanged.
        """
        if self.spec is None:
            raise SpecError("predict needs a spec for the input shape; use build_model")
        validate_images(images, input_shape=tuple(self.spec.input.shape))
        with eval_mode(self):
            return self(images, noise=noise)


def build_head(spec: ModelSpec, in_features: int) -> Head:
    """The head that ``spec.head`` names, on pre-logits of size ``in_features``."""
    temperature = {
        "temperature": spec.temperature,
        "learn_temperature": spec.learn_temperature,
        "temperature_bounds": spec.temperature_bounds,
    }
    if spec.head == "det":
        return DeterministicHead(in_features, spec.num_classes, **temperature)
    het_options = {
        **temperature,
        "num_factors": spec.num_factors,
        "train_mc_samples": spec.train_mc_samples,
        "eval_mc_samples": spec.eval_mc_samples,
        "share_samples_across_batch": spec.share_samples_across_batch,
    }
    if spec.head == "het_sigmoid":
        return HetSigmoidHead(in_features, spec.num_classes, **het_options)
    if spec.head == "het_xl":
        return HetXLHead(in_features, spec.num_classes, **het_options)
    return HetSoftmaxHead(
        in_features, spec.num_classes, parameter_efficient=spec.head == "het_pe", **het_options
    )


def build_model(spec: ModelSpec) -> HetClassifier:
    """Backbone and head from a spec, with freshly initialised weights."""
    backbone = build_backbone(spec.backbone, **spec.backbone_kwargs)
    dim = feature_dim(backbone, tuple(spec.input.shape))
    return HetClassifier(backbone, build_head(spec, dim), spec=spec)
