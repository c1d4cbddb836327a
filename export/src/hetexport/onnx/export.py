"""Export a trained HET classifier into a Triton model repository, validated against PyTorch.

Typical usage::

    report = export_to_repository("runs/het.pt", Path("model_repo"), "fashion_het",
                                  metrics={"test_nll": 0.31}, top_k=5, num_confusable=3)
    print(report.model_dir, report.parity.max_abs_diff)

writes, only after the ONNX graph passed ``check_parity``::

    model_repo/<name>/config.pbtxt       Triton config (+ the model card as a parameter)
    model_repo/<name>/1/model.onnx       images [B, C, H, W] -> hetcontract.HEAD_OUTPUTS
    model_repo/<name>/model_card.json    hetcontract.ModelCard
    model_repo/<name>/labels.txt         one label per line, class id order
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetcontract import MODEL_CARD_FILENAME, InputSpec, ModelCard, MonteCarloSpec
from pydantic import ValidationError
from torch import Tensor

from hetexport.checkpoint import load_checkpoint
from hetexport.errors import ExportError
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import AUTO_DESIGN
from hetexport.model import HetClassifier
from hetexport.onnx.graph import export_graph
from hetexport.onnx.parity import ParityReport, check_parity
from hetexport.onnx.sampling_plan import plan_sampling
from hetexport.repository import (
    CONFIG_FILENAME,
    DEFAULT_MAX_BATCH_SIZE,
    DynamicBatching,
    model_config,
    render_config,
)
from hetexport.serving.head import ServingGraph

DEFAULT_TOP_K = 5
DEFAULT_NUM_CONFUSABLE = 3
"""Defaults for models with many classes; a model with K classes gets ``default_top_k(K)``
and ``default_num_confusable(K)``, which never ask for more classes than it has."""
DEFAULT_NOISE_SEED = 0
DEFAULT_BANK_DESIGN = AUTO_DESIGN
"""The baked bank's design (``hetexport.layers.noise_bank.resolve_design``): the fitted bank
with held-out images, else moment-matched Sobol where S allows it, at the S a model-free
criterion chose (``hetexport.onnx.sampling_plan.DEFAULT_EXPORT_MC_SAMPLES``)."""

MODEL_VERSION = "1"
MODEL_FILENAME = "model.onnx"
LABELS_FILENAME = "labels.txt"


def default_top_k(num_classes: int) -> int:
    """``min(DEFAULT_TOP_K, K)``: every class of a model with fewer than five."""
    return min(DEFAULT_TOP_K, num_classes)


def default_num_confusable(num_classes: int) -> int:
    """``min(DEFAULT_NUM_CONFUSABLE, K - 1)``: a class can be confused with the K - 1 others."""
    return min(DEFAULT_NUM_CONFUSABLE, num_classes - 1)


@dataclass(frozen=True)
class ExportReport:
    """Where the export went and what its validation measured."""

    model_dir: Path
    onnx_path: Path
    config_path: Path
    card_path: Path
    labels_path: Path
    card: ModelCard
    parity: ParityReport
    onnx_bytes: int


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
) -> ExportReport:
    """Export, validate against PyTorch, then write ``model_repo/<name>/`` (replacing it).

    S: ``mc_samples`` if given; else, with ``mc_error``, the smallest S whose 99th-percentile
    p_bar error (max over classes, against the exact integral) on the first half of
    ``error_images`` is <= ``mc_error``; else ``DEFAULT_EXPORT_MC_SAMPLES``. With
    ``error_images`` (normalised [N, C, H, W], held out from training) the model card records
    the served graph's error on every quantity (on the second half when S was chosen on the
    first); without, it records only the design and S. ``top_k`` defaults to
    ``default_top_k(K)``, ``num_confusable`` to ``default_num_confusable(K)``; labels, input
    spec and the checkpoint's metrics come from the model's spec unless given. Raises
    ExportError (and writes nothing) when the export or its parity check fails.
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
    samples = plan.samples
    exported = export_onnx(
        model,
        input_shape=input_shape,
        mc_samples=samples,
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
        samples=samples,
        top_k=top_k,
        num_confusable=num_confusable,
        metrics={**spec_metrics, **(metrics or {})},
        parity={**parity.as_card(), "noise_seed": plan.seed},
        monte_carlo=plan.card(model, exported.onnx_model),
    )
    config = model_config(
        name,
        input_shape=input_shape,
        num_classes=head.num_classes,
        top_k=top_k,
        num_confusable=num_confusable,
        model_card_json=card.model_dump_json(),
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        instance_count=instance_count,
    )
    files = {
        CONFIG_FILENAME: render_config(config).encode(),
        f"{MODEL_VERSION}/{MODEL_FILENAME}": exported.onnx_model,
        MODEL_CARD_FILENAME: (card.model_dump_json(indent=2) + "\n").encode(),
        LABELS_FILENAME: ("\n".join(labels) + "\n").encode(),
    }
    model_dir = _write_model_dir(Path(model_repo), name, files)
    return ExportReport(
        model_dir=model_dir,
        onnx_path=model_dir / MODEL_VERSION / MODEL_FILENAME,
        config_path=model_dir / CONFIG_FILENAME,
        card_path=model_dir / MODEL_CARD_FILENAME,
        labels_path=model_dir / LABELS_FILENAME,
        card=card,
        parity=parity,
        onnx_bytes=len(exported.onnx_model),
    )


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
            version=MODEL_VERSION,
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


def _write_model_dir(model_repo: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write every file into a temporary sibling, then swap it in for ``model_repo/<name>``."""
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}")
    model_repo.mkdir(parents=True, exist_ok=True)
    target = model_repo / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=model_repo))
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        staging.chmod(0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=model_repo))
            target.replace(retired / name)
            staging.replace(target)
            shutil.rmtree(retired)
        else:
            staging.replace(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"cannot write {target}: {exc}") from exc
    return target
