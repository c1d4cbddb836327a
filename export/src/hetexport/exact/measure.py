"""A model's served head measured against the exact answer.

``reference_for(model, images)`` computes, once, the latent Gaussians of the images (float64)
and their exact integrals (``exact_answer``); ``head_error`` then measures any bank (or any
served outputs, e.g. an exported ONNX model's) against them, so that designs, seeds and sample
counts are compared on the same reference.

Typical usage::

    reference = reference_for(model, images)                       # the slow part, once
    bank = NoiseBank.fixed(128, R, K, seed=0, design="moment_matched_sobol")
    report = head_error(model, images, reference, bank=bank)       # ErrorReport
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hetexport.class_correlation import correlation_rule, topk_correlation
from hetexport.exact.error import ErrorReport, served_error
from hetexport.exact.integral import (
    REFERENCE_POINTS,
    REFERENCE_REPLICAS,
    ExactAnswer,
    exact_answer,
)
from hetexport.layers import LatentGaussian, NoiseBank
from hetexport.model import HetClassifier
from hetexport.serving.head import ServingGraph

SAMPLE_COUNTS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Sample counts an error target tries, in order (powers of 2 keep Sobol nets balanced)."""
REFERENCE_DESCRIPTION = (
    "randomized QMC: {points} Owen-scrambled Sobol points ({replicas} independent replicas) in "
    "the eigenbasis of the centred (softmax) or raw (sigmoid) latent covariance"
)


@dataclass(frozen=True)
class Reference:
    """The images' latent Gaussians (float64) and their exact integrals."""

    latent: LatentGaussian
    exact: ExactAnswer
    temperature: float
    link: str
    description: str

    def subset(self, rows: slice) -> Reference:
        """The reference of images ``rows`` only."""
        return Reference(_latent_rows(self.latent, rows), _exact_rows(self.exact, rows),
                         self.temperature, self.link, self.description)


@torch.no_grad()
def reference_for(
    model: HetClassifier,
    images: Tensor,
    *,
    points: int = REFERENCE_POINTS,
    replicas: int = REFERENCE_REPLICAS,
) -> Reference:
    """Latents of ``images`` in float64 and their exact integrals (``exact_answer``)."""
    wide = copy.deepcopy(model).double().eval()
    latent = wide.head.latent(wide.backbone(images.double()))
    tau = float(wide.head.temperature())
    link = model.head.link
    exact = exact_answer(latent, tau, link=link, points=points, replicas=replicas)
    description = REFERENCE_DESCRIPTION.format(points=points, replicas=replicas)
    return Reference(latent, exact, tau, link, description)


@torch.no_grad()
def served_outputs(model: HetClassifier, images: Tensor, *, bank: NoiseBank | None,
                   top_k: int, num_confusable: int) -> dict[str, np.ndarray]:
    """What the exported graph serves for ``images`` with ``bank``, computed in PyTorch
    (``ServingGraph``; equal to the ONNX graph within the export's parity limits)."""
    graph = ServingGraph(model.eval(), noise=bank, top_k=top_k, num_confusable=num_confusable)
    return {name: value.numpy() for name, value in graph(images)._asdict().items()}


def head_error(
    model: HetClassifier,
    images: Tensor,
    reference: Reference,
    *,
    bank: NoiseBank | None = None,
    served: Mapping[str, np.ndarray] | None = None,
    top_k: int = 5,
    num_confusable: int = 3,
) -> ErrorReport:
    """Every served quantity's error on ``images``, from ``served`` outputs (e.g. an ONNX
    model's) or, when not given, from the serving graph with ``bank``."""
    if served is None:
        served = served_outputs(model, images, bank=bank, top_k=top_k,
                                num_confusable=num_confusable)
    rule = correlation_rule(reference.link)
    top_ids = torch.from_numpy(np.asarray(served["topk_ids"], dtype=np.int64))
    exact_corr = topk_correlation(reference.latent, top_ids, rule=rule)
    return served_error(served, reference.exact, exact_correlation=exact_corr, rule=rule)


def _latent_rows(latent: LatentGaussian, rows: slice) -> LatentGaussian:
    """The latent of examples ``rows`` (batch-shaped fields sliced, shared ones kept)."""
    def cut(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[rows]

    return LatentGaussian(
        latent.mean[rows], latent.scale[rows], cut(latent.factors), cut(latent.factor_scale),
        latent.shared_factors, cut(latent.prelogit_scale), latent.prelogit_weight,
    )


def _exact_rows(exact: ExactAnswer, rows: slice) -> ExactAnswer:
    return ExactAnswer(
        *(None if getattr(exact, f) is None else getattr(exact, f)[rows]
          for f in ExactAnswer._fields[:-1]),
        standard_error={k: v[rows] for k, v in exact.standard_error.items()},
    )
