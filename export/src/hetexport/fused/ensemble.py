"""The GPU serving layout: a Triton ensemble ``backbone (ONNX) -> het_mc_head (fused kernel)``.

On the GPU the ONNX head would materialise [B, S, K]; here the ONNX graph stops at the latent
Gaussian and a Python-backend model runs the fused MC head on the same GPU, tensors passed by
DLPack (no host round trip)::

    images --> <name>_backbone (onnxruntime)  --> latent_mean [B, K], latent_scale [B, K],
                   latent_factors [B, K, R] (dense) | latent_factor_scale [B, K] (efficient)
           --> het_mc_head (python, fused kernel) --> hetcontract.HEAD_OUTPUTS
    <name> (ensemble) wires the two and carries the model card.

Written from the same checkpoint and the same shared noise bank as the ONNX model (read from
that model's ``noise_factors`` / ``noise_diag`` initializers when ``reference`` is given), so
the ensemble answers what ``fashion_het`` answers. ``model_repo_gpu/`` is not served by default.

Typical usage::

    write_gpu_ensemble("checkpoints/fashion_het.pt", Path("model_repo_gpu"),
                       reference=Path("model_repo/fashion_het"))
    # or: python -m hetexport.fused.ensemble checkpoints/fashion_het.pt model_repo_gpu \
    #         --reference model_repo/fashion_het
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import onnx
import torch
from hetcontract import HEAD_OUTPUTS, INPUT_NAME, MODEL_CARD_FILENAME, ModelCard, MonteCarloSpec
from onnx import numpy_helper
from torch import Tensor, nn

from hetexport.checkpoint import load_checkpoint
from hetexport.fused.errors import EnsembleError, FusedHeadError
from hetexport.fused.python_backend import MC_IMPL_PARAMETER
from hetexport.fused.served_head import (
    HEAD_CONSTANTS_FILENAME,
    LATENT_FACTOR_SCALE,
    LATENT_FACTORS,
    LATENT_MEAN,
    LATENT_SCALE,
    HeadConstants,
)
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import DEFAULT_BANK_DESIGN, resolve_design
from hetexport.model import HetClassifier
from hetexport.onnx.export import DEFAULT_NOISE_SEED, default_num_confusable, default_top_k
from hetexport.onnx.sampling_plan import DEFAULT_EXPORT_MC_SAMPLES
from hetexport.repo.config import (
    DEFAULT_MAX_BATCH_SIZE,
    FP32,
    PLATFORM,
    PYTHON_BACKEND,
    EnsembleStep,
    TensorConfig,
    ensemble_config,
    head_output_configs,
    images_input,
    placed_model_config,
    same_names,
)
from hetexport.repo.layout import (
    FIRST_VERSION,
    MODEL_FILENAME,
    ModelFiles,
    existing_versions,
    write_model,
)

ENSEMBLE_NAME = "fashion_het_gpu"
HEAD_MODEL_NAME = "het_mc_head"
MAX_QUEUE_DELAY_US = 500
ONNX_OPSET = 17
ENSEMBLE_PLACEHOLDER = ".gitkeep"
"""Triton wants a version directory even for an ensemble; this empty file keeps it in git."""
FORCE_CPU_ONLY_INPUT_TENSORS = "FORCE_CPU_ONLY_INPUT_TENSORS"
PYTHON_MODEL_FILENAME = "model.py"
HEAD_MODEL_PY = '''"""Triton Python-backend model: the fused MC head (hetexport.fused)."""

from hetexport.fused.python_backend import McHeadModel as TritonPythonModel  # noqa: F401
'''


class GpuEnsemble(NamedTuple):
    """What ``write_gpu_ensemble`` wrote: the three model directories and the model card."""

    ensemble_dir: Path
    backbone_dir: Path
    head_dir: Path
    card: ModelCard


class LatentBackbone(nn.Module):
    """``images -> (mu, d, V | v)``: the classifier up to its latent Gaussian, for ONNX export."""

    def __init__(self, model: HetClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        latent = self.model.head.latent(self.model.backbone(images))
        if latent.parameter_efficient:
            return latent.mean, latent.scale, latent.factor_scale
        if latent.factors is not None:
            return latent.mean, latent.scale, latent.factors
        return latent.mean, latent.scale


class GpuEnsembleFiles(NamedTuple):
    """The three models of the ensemble in memory (``hetexport.repo.layout.ModelFiles``)."""

    ensemble: ModelFiles
    backbone: ModelFiles
    head: ModelFiles
    card: ModelCard


def write_gpu_ensemble(checkpoint: str | Path | HetClassifier, repo: Path,
                       **options: Any) -> GpuEnsemble:
    """``build_gpu_ensemble`` (``options`` are its own), then each model written into
    ``repo`` (``hetexport.repo.layout.write_model``, replacing a model of the same name)."""
    built = build_gpu_ensemble(checkpoint, **options)
    ensemble, backbone, head = (write_model(repo, files).model_dir for files in built[:3])
    return GpuEnsemble(ensemble, backbone, head, built.card)


def build_gpu_ensemble(
    checkpoint: str | Path | HetClassifier,
    *,
    name: str = ENSEMBLE_NAME,
    head_name: str = HEAD_MODEL_NAME,
    reference: Path | None = None,
    mc_samples: int | None = None,
    seed: int = DEFAULT_NOISE_SEED,
    top_k: int | None = None,
    num_confusable: int | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    mc_impl: str = "auto",
) -> GpuEnsembleFiles:
    """The models ``name``, ``name_backbone`` and ``head_name`` in memory (see module doc).

    ``reference``: an exported ONNX model directory (``model_repo/fashion_het``) whose noise
    bank, top_k, num_confusable, metrics and ``monte_carlo`` card section are reused (the
    same bank gives the same numbers); otherwise the bank is ``NoiseBank.fixed(mc_samples, R,
    K, seed=seed, design=DEFAULT_BANK_DESIGN)``, the exporter's convention, and ``top_k`` /
    ``num_confusable`` default as the exporter's (``default_top_k(K)``, ...).
    """
    if not isinstance(checkpoint, HetClassifier):
        checkpoint = load_checkpoint(checkpoint).model
    model = checkpoint
    model = model.cpu().eval()
    spec = model.spec
    head = model.head
    if spec is None or head.kind not in ("het", "het_pe"):
        raise EnsembleError(f"the fused head serves HET softmax heads, not {head.kind!r}")
    card = _model_card(model, name, reference=reference, mc_samples=mc_samples, top_k=top_k,
                       num_confusable=num_confusable)
    noise = (baked_noise_bank(reference) if reference is not None
             else NoiseBank.fixed(card.mc_samples, head.num_factors, head.num_classes, seed=seed,
                                  design=DEFAULT_BANK_DESIGN))
    if (noise.num_factors, noise.num_classes) != (head.num_factors, head.num_classes):
        raise EnsembleError(f"reference noise bank is R={noise.num_factors}, K={noise.num_classes}")
    constants = HeadConstants(
        noise=noise,
        shared_factors=head.shared_factors.detach().float() if head.parameter_efficient else None,
        temperature=float(head.temperature()),
        top_k=card.top_k,
        num_confusable=card.num_confusable,
    )
    backbone_name = f"{name}_backbone"
    latent_dims = _latent_dims(constants, head.num_classes)
    return GpuEnsembleFiles(
        ensemble=_ensemble_files(card, name, backbone_name, head_name, latent_dims,
                                 max_batch_size=max_batch_size),
        backbone=_backbone_files(model, backbone_name, latent_dims,
                                 max_batch_size=max_batch_size),
        head=_head_files(constants, head_name, latent_dims, head.num_classes,
                         max_batch_size=max_batch_size, mc_impl=mc_impl),
        card=card,
    )


def _model_card(model: HetClassifier, name: str, *, reference: Path | None,
                mc_samples: int | None, top_k: int | None, num_confusable: int | None
                ) -> ModelCard:
    spec, head = model.spec, model.head
    samples = mc_samples or DEFAULT_EXPORT_MC_SAMPLES
    fields = {"metrics": {}, "parity": {},
              "top_k": default_top_k(head.num_classes) if top_k is None else top_k,
              "num_confusable": (default_num_confusable(head.num_classes)
                                 if num_confusable is None else num_confusable),
              "mc_samples": samples,
              "monte_carlo": MonteCarloSpec(
                  design=resolve_design(DEFAULT_BANK_DESIGN, samples, head.num_factors,
                                        head.num_classes),
                  samples=samples, images=0)}
    if reference is not None:
        ref = ModelCard.model_validate_json((reference / MODEL_CARD_FILENAME).read_text())
        fields = {"metrics": ref.metrics, "parity": {}, "top_k": ref.top_k,
                  "num_confusable": ref.num_confusable, "mc_samples": ref.mc_samples,
                  "monte_carlo": ref.monte_carlo}
    labels = list(spec.labels) or [str(k) for k in range(head.num_classes)]
    return ModelCard(name=name, head=head.kind, num_classes=head.num_classes, labels=labels,
                     num_factors=head.num_factors, temperature=float(head.temperature()),
                     input=spec.input, **fields)


def baked_noise_bank(model_dir: Path) -> NoiseBank:
    """The shared bank baked into the newest version of an exported ONNX model (its
    initializers ``noise_factors`` / ``noise_diag``): the samples it serves with, exactly."""
    versions = existing_versions(model_dir)
    path = model_dir / str(versions[-1] if versions else FIRST_VERSION) / MODEL_FILENAME
    try:
        graph = onnx.load(str(path)).graph
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise EnsembleError(f"cannot read the reference model {path}: {exc}") from exc
    found = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer
             if t.name in ("noise_factors", "noise_diag")}
    if set(found) != {"noise_factors", "noise_diag"}:
        raise EnsembleError(f"{path} has no initializers 'noise_factors' and 'noise_diag'")
    return NoiseBank(found["noise_factors"].float(), found["noise_diag"].float())


def _latent_dims(constants: HeadConstants, classes: int) -> dict[str, list[int]]:
    dims = {LATENT_MEAN: [classes], LATENT_SCALE: [classes]}
    if LATENT_FACTORS in constants.latent_names:
        dims[LATENT_FACTORS] = [classes, constants.noise.num_factors]
    if LATENT_FACTOR_SCALE in constants.latent_names:
        dims[LATENT_FACTOR_SCALE] = [classes]
    return dims


def _backbone_files(model: HetClassifier, name: str, latent_dims: dict[str, list[int]], *,
                    max_batch_size: int) -> ModelFiles:
    example = torch.zeros(2, *model.spec.input.shape)
    names = list(latent_dims)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings from shape checks, all static here
        torch.onnx.export(
            LatentBackbone(model), (example,), buffer,
            input_names=[INPUT_NAME], output_names=names, opset_version=ONNX_OPSET,
            dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]}, dynamo=False,
        )
    config = placed_model_config(  # the embedded launcher serves it through ORT
        name, inputs=[images_input(model.spec.input.shape)], outputs=_latent_tensors(latent_dims),
        max_batch_size=max_batch_size, max_queue_delay_us=MAX_QUEUE_DELAY_US, platform=PLATFORM)
    return ModelFiles(config=config, version_files={MODEL_FILENAME: buffer.getvalue()})


def _head_files(constants: HeadConstants, name: str, latent_dims: dict[str, list[int]],
                classes: int, *, max_batch_size: int, mc_impl: str) -> ModelFiles:
    outputs = head_output_configs(num_classes=classes, top_k=constants.top_k,
                                  num_confusable=constants.num_confusable)
    config = placed_model_config(
        name, inputs=_latent_tensors(latent_dims), outputs=outputs,
        max_batch_size=max_batch_size, max_queue_delay_us=MAX_QUEUE_DELAY_US,
        backend=PYTHON_BACKEND,
        parameters={FORCE_CPU_ONLY_INPUT_TENSORS: "no", MC_IMPL_PARAMETER: mc_impl})
    return ModelFiles(config=config, version_files={
        HEAD_CONSTANTS_FILENAME: constants.to_bytes(),
        PYTHON_MODEL_FILENAME: HEAD_MODEL_PY.encode()})


def _ensemble_files(card: ModelCard, name: str, backbone: str, head: str,
                    latent_dims: dict[str, list[int]], *, max_batch_size: int) -> ModelFiles:
    output_names = [spec.name.value for spec in HEAD_OUTPUTS]
    steps = (
        EnsembleStep(backbone, same_names([INPUT_NAME]), same_names(list(latent_dims))),
        EnsembleStep(head, same_names(list(latent_dims)), same_names(output_names)),
    )
    outputs = head_output_configs(num_classes=card.num_classes, top_k=card.top_k,
                                  num_confusable=card.num_confusable, reshape_scalars=False)
    config = ensemble_config(name, inputs=[images_input(card.input.shape)], outputs=outputs,
                             steps=steps, max_batch_size=max_batch_size)
    return ModelFiles(config=config, version_files={ENSEMBLE_PLACEHOLDER: b""}, card=card,
                      labels=tuple(card.labels))


def _latent_tensors(latent_dims: dict[str, list[int]]) -> list[TensorConfig]:
    return [TensorConfig(name, FP32, tuple(dims)) for name, dims in latent_dims.items()]


def main() -> None:
    """CLI: ``python -m hetexport.fused.ensemble CHECKPOINT REPO [--reference DIR] ...``."""
    import typer

    def write(checkpoint: Path, repo: Path, reference: Path | None = None,
              name: str = ENSEMBLE_NAME, seed: int = DEFAULT_NOISE_SEED,
              max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        try:
            written = write_gpu_ensemble(checkpoint, repo, name=name, reference=reference,
                                         seed=seed, max_batch_size=max_batch_size)
        except FusedHeadError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"wrote {written.ensemble_dir}, {written.backbone_dir}, {written.head_dir}")

    typer.run(write)


if __name__ == "__main__":
    main()
