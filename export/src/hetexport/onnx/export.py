"""Export a trained HET classifier for Triton, validated against PyTorch.

Typical usage::

    report = export_to_repository("runs/het.pt", Path("model_repo"), "fashion_het",
                                  metrics={"test_nll": 0.31}, top_k=5, num_confusable=3)
    print(report.model_dir, report.parity.max_abs_diff)
    export_to_repository("runs/het_v2.pt", Path("model_repo"), "fashion_het", version=2)

``build_export`` traces the model, checks the ONNX graph against PyTorch (``check_parity``)
and returns the model in memory (``hetexport.repo.layout.ModelFiles``: config, card, labels,
``model.onnx``); ``export_to_repository`` then writes it with ``write_model``, as version 1
replacing the model directory, or as version N beside the existing ones::

    model_repo/<name>/config.pbtxt       Triton config (+ the model card as a parameter)
    model_repo/<name>/<N>/model.onnx     images [B, C, H, W] -> hetcontract.HEAD_OUTPUTS
    model_repo/<name>/model_card.json    hetcontract.ModelCard (``version`` N)
    model_repo/<name>/labels.txt         one label per line, class id order
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetcontract import InputSpec, ModelCard, MonteCarloSpec
from hetcontract.api import MAX_TOP_K_DEFAULT as DEFAULT_TOP_K
from pydantic import ValidationError
from torch import Tensor

from hetexport.checkpoint import load_checkpoint
from hetexport.errors import ExportError
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import DEFAULT_BANK_DESIGN
from hetexport.model import HetClassifier
from hetexport.onnx.graph import export_graph
from hetexport.onnx.parity import ParityReport, check_parity
from hetexport.onnx.sampling_plan import plan_sampling
from hetexport.repo.config import DEFAULT_MAX_BATCH_SIZE, DynamicBatching, onnx_model_config
from hetexport.repo.layout import MODEL_FILENAME, ModelFiles, WrittenModel, write_model
from hetexport.serving.head import ServingGraph

DEFAULT_NOISE_SEED = 0


DEFAULT_NUM_CONFUSABLE = 3
"""m, the confusable classes a graph lists per top class (``default_num_confusable``)."""


def default_top_k(num_classes: int) -> int:
    """``min(DEFAULT_TOP_K, K)``: every class of a model with fewer than five (a model never
    asks for more classes than it has). ``DEFAULT_TOP_K`` is the contract's default top-k of a
    request, so a request's default and a graph's default k_max are one number."""
    return min(DEFAULT_TOP_K, num_classes)


def default_num_confusable(num_classes: int) -> int:
    """``min(DEFAULT_NUM_CONFUSABLE, K - 1)``: a class can be confused with the K - 1 others."""
    return min(DEFAULT_NUM_CONFUSABLE, num_classes - 1)


@dataclass(frozen=True)
class BuiltExport:
    """A validated export in memory: the model's files, its card and the parity figures."""

    files: ModelFiles
    card: ModelCard
    parity: ParityReport

    @property
    def onnx_model(self) -> bytes:
        return self.files.version_files[MODEL_FILENAME]


@dataclass(frozen=True)
class ExportReport:
    """Where the export went and what its validation measured."""

    model_dir: Path
    version: int
    onnx_path: Path
    config_path: Path
    card_path: Path
    labels_path: Path
    card: ModelCard
    parity: ParityReport
    onnx_bytes: int

    @classmethod
    def of(cls, written: WrittenModel, built: BuiltExport) -> ExportReport:
        assert written.card is not None
        return cls(model_dir=written.model_dir, version=written.version,
                   onnx_path=written.version_dir / MODEL_FILENAME,
                   config_path=written.config_path, card_path=written.card_path,
                   labels_path=written.labels_path, card=written.card, parity=built.parity,
                   onnx_bytes=len(built.onnx_model))


@dataclass(frozen=True)
class ExportedGraph:
    """An ONNX model in memory with the PyTorch module (and its noise bank) it came from."""

    onnx_model: bytes
    graph: ServingGraph


def build_serving_graph(
    model: HetClassifier,
    *,
    mc_samples: int,
    top_k: int,
    num_confusable: int,
    seed: int,
    design: str = DEFAULT_BANK_DESIGN,
    bank: NoiseBank | None = None,
) -> ServingGraph:
    """Wrap ``model`` (eval mode) with ``bank`` when given (a fitted one), else
    ``NoiseBank.fixed(mc_samples, R, K, seed=seed, design=design)``.

    (HET-XL: ``NoiseBank.fixed(mc_samples, R, D, ...)``, its diagonal noise is z_D.)
    """
    head = model.head
    noise = bank if head.kind != "det" else None
    if head.kind != "det" and noise is None:
        try:
            noise = NoiseBank.fixed(mc_samples, head.num_factors, head.diag_noise_dim,
                                    seed=seed, design=design)
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    try:
        return ServingGraph(model.eval(), noise=noise, top_k=top_k, num_confusable=num_confusable)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def export_onnx(
    model: HetClassifier,
    *,
    input_shape: tuple[int, int, int],
    mc_samples: int,
    top_k: int = DEFAULT_TOP_K,
    num_confusable: int = DEFAULT_NUM_CONFUSABLE,
    seed: int = DEFAULT_NOISE_SEED,
    design: str = DEFAULT_BANK_DESIGN,
    bank: NoiseBank | None = None,
) -> ExportedGraph:
    """Trace ``model`` to ONNX in memory (nothing validated or written yet); ``bank``
    overrides the (``seed``, ``design``) bank (``build_serving_graph``)."""
    graph = build_serving_graph(
        model, mc_samples=mc_samples, top_k=top_k, num_confusable=num_confusable, seed=seed,
        design=design, bank=bank,
    )
    proto = export_graph(graph, input_shape)
    return ExportedGraph(proto.SerializeToString(), graph)


def export_to_repository(
    checkpoint_or_model: str | os.PathLike[str] | HetClassifier,
    model_repo: str | os.PathLike[str],
    name: str,
    *,
    version: int | None = None,
    **options: Any,
) -> ExportReport:
    """``build_export`` then ``write_model``: ``model_repo/<name>/`` replaced by version 1
    (``version`` None) or version ``version`` added beside the existing ones.

    ``options`` are ``build_export``'s. Raises ExportError (and writes nothing) when the export
    or its parity check fails, or the version exists already (``RepositoryError``).
    """
    built = build_export(checkpoint_or_model, name, **options)
    return ExportReport.of(write_model(model_repo, built.files, version=version), built)


def build_export(
    checkpoint_or_model: str | os.PathLike[str] | HetClassifier,
    name: str,
    *,
    mc_samples: int | None = None,
    top_k: int | None = None,
    num_confusable: int | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    metrics: dict[str, Any] | None = None,
    seed: int = DEFAULT_NOISE_SEED,
    labels: list[str] | None = None,
    input_spec: InputSpec | None = None,
    dynamic_batching: DynamicBatching | None = None,
    instance_count: int = 1,
    design: str = DEFAULT_BANK_DESIGN,
    mc_error: float | None = None,
    error_images: Tensor | None = None,
) -> BuiltExport:
    """Export to ONNX and validate against PyTorch, in memory (nothing is written).

    S: ``mc_samples`` if given; else, with ``mc_error``, the smallest S whose 99th-percentile
    p_bar error (max over classes, against the exact integral) on the first half of
    ``error_images`` is <= ``mc_error``; else ``DEFAULT_EXPORT_MC_SAMPLES``. With
    ``error_images`` (normalised [N, C, H, W], held out from training) the model card records
    the served graph's error on every quantity (on the second half when S was chosen on the
    first); without, it records only the design and S. ``top_k`` defaults to
    ``default_top_k(K)``, ``num_confusable`` to ``default_num_confusable(K)``; labels, input
    spec and the checkpoint's metrics come from the model's spec unless given. Raises
    ExportError when the export or its parity check fails.
    """
    model, spec_metrics = _resolve_model(checkpoint_or_model)
    spec = model.spec
    labels = list(labels or (spec.labels if spec else []))
    input_spec = input_spec or (spec.input if spec else None)
    if input_spec is None:
        raise ExportError("a model without a ModelSpec needs input_spec=InputSpec(...)")
    head = model.head
    if not labels:
        labels = [f"class_{k}" for k in range(head.num_classes)]
    top_k = default_top_k(head.num_classes) if top_k is None else top_k
    if num_confusable is None:
        num_confusable = default_num_confusable(head.num_classes)
    input_shape = tuple(input_spec.shape)
    plan = plan_sampling(model, mc_samples=mc_samples, mc_error=mc_error, design=design,
                         seed=seed, images=error_images)
    exported = export_onnx(
        model,
        input_shape=input_shape,
        mc_samples=plan.samples,
        top_k=top_k,
        num_confusable=num_confusable,
        seed=plan.seed,
        design=plan.design,
        bank=plan.bank,
    )
    parity = check_parity(exported.graph, exported.onnx_model, input_shape=input_shape)
    card = _model_card(
        name,
        model,
        labels=labels,
        input_spec=input_spec,
        samples=plan.samples,
        top_k=top_k,
        num_confusable=num_confusable,
        metrics={**spec_metrics, **(metrics or {})},
        parity={**parity.as_card(), "noise_seed": plan.seed},
        monte_carlo=plan.card(model, exported.onnx_model),
    )
    config = onnx_model_config(
        name,
        input_shape=input_shape,
        num_classes=head.num_classes,
        top_k=top_k,
        num_confusable=num_confusable,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        instance_count=instance_count,
    )
    files = ModelFiles(config=config, version_files={MODEL_FILENAME: exported.onnx_model},
                       card=card, labels=tuple(labels))
    return BuiltExport(files=files, card=card, parity=parity)


def _resolve_model(
    source: str | os.PathLike[str] | HetClassifier,
) -> tuple[HetClassifier, dict[str, Any]]:
    if isinstance(source, HetClassifier):
        return source, {}
    checkpoint = load_checkpoint(source)
    return checkpoint.model, dict(checkpoint.metrics)


def _model_card(
    name: str,
    model: HetClassifier,
    *,
    labels: list[str],
    input_spec: InputSpec,
    samples: int,
    top_k: int,
    num_confusable: int,
    metrics: dict[str, Any],
    parity: dict[str, Any],
    monte_carlo: MonteCarloSpec,
) -> ModelCard:
    head = model.head
    try:
        return ModelCard(
            name=name,
            head=head.kind,
            num_classes=head.num_classes,
            labels=labels,
            num_factors=head.num_factors,
            mc_samples=samples,
            temperature=float(head.temperature().detach()),
            top_k=top_k,
            num_confusable=num_confusable,
            input=input_spec,
            metrics=json.loads(json.dumps(metrics)),
            parity=parity,
            monte_carlo=monte_carlo,
        )
    except (ValidationError, TypeError, ValueError) as exc:
        raise ExportError(f"cannot build the model card: {exc}") from exc
