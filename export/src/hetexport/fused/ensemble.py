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

import warnings
from pathlib import Path
from typing import NamedTuple

import onnx
import torch
from hetcontract import (
    HEAD_OUTPUTS,
    INPUT_NAME,
    MODEL_CARD_FILENAME,
    MODEL_CARD_PARAMETER,
    ModelCard,
    MonteCarloSpec,
)
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
from hetexport.layers.noise_bank import resolve_design
from hetexport.model import HetClassifier
from hetexport.onnx.export import DEFAULT_BANK_DESIGN
from hetexport.onnx.sampling_plan import DEFAULT_EXPORT_MC_SAMPLES
from hetexport.repository import head_output_configs, quoted

ENSEMBLE_NAME = "fashion_het_gpu"
HEAD_MODEL_NAME = "het_mc_head"
DEFAULT_TOP_K = 5
DEFAULT_NUM_CONFUSABLE = 3
DEFAULT_SEED = 0
DEFAULT_MAX_BATCH_SIZE = 64
BACKBONE_FILENAME = "model.onnx"
MAX_QUEUE_DELAY_US = 500
ONNX_OPSET = 17
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


def write_gpu_ensemble(
    checkpoint: str | Path | HetClassifier,
    repo: Path,
    *,
    name: str = ENSEMBLE_NAME,
    head_name: str = HEAD_MODEL_NAME,
    reference: Path | None = None,
    mc_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    top_k: int = DEFAULT_TOP_K,
    num_confusable: int = DEFAULT_NUM_CONFUSABLE,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    mc_impl: str = "auto",
) -> GpuEnsemble:
    """Write ``repo/{name, name_backbone, head_name}`` (see module doc).

    ``reference``: an exported ONNX model directory (``model_repo/fashion_het``) whose noise
    bank, top_k, num_confusable, metrics and ``monte_carlo`` card section are reused (the
    same bank gives the same numbers); otherwise the bank is ``NoiseBank.fixed(mc_samples, R,
    K, seed=seed, design=DEFAULT_BANK_DESIGN)``, the exporter's convention.
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
    noise = (_reference_noise(reference) if reference is not None
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
    backbone_dir = _write_backbone(model, repo / backbone_name, latent_dims,
                                   max_batch_size=max_batch_size)
    head_dir = _write_head(constants, repo / head_name, latent_dims, head.num_classes,
                           max_batch_size=max_batch_size, mc_impl=mc_impl)
    ensemble_dir = _write_ensemble(repo / name, card, backbone_name, head_name, latent_dims,
                                   max_batch_size=max_batch_size)
    return GpuEnsemble(ensemble_dir, backbone_dir, head_dir, card)


def _model_card(model: HetClassifier, name: str, *, reference: Path | None,
                mc_samples: int | None, top_k: int, num_confusable: int) -> ModelCard:
    spec, head = model.spec, model.head
    samples = mc_samples or DEFAULT_EXPORT_MC_SAMPLES
    fields = {"metrics": {}, "parity": {}, "top_k": top_k, "num_confusable": num_confusable,
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


def _reference_noise(reference: Path) -> NoiseBank:
    """The shared bank baked into an exported ONNX model (initializers noise_factors/diag)."""
    path = reference / "1" / "model.onnx"
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


def _write_backbone(model: HetClassifier, model_dir: Path, latent_dims: dict[str, list[int]], *,
                    max_batch_size: int) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, *model.spec.input.shape)
    names = list(latent_dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings from shape checks, all static here
        torch.onnx.export(
            LatentBackbone(model), (example,), str(model_dir / "1" / BACKBONE_FILENAME),
            input_names=[INPUT_NAME], output_names=names, opset_version=ONNX_OPSET,
            dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *names]}, dynamo=False,
        )
    runtime = 'platform: "onnxruntime_onnx"'  # the embedded launcher serves it through ORT
    inputs = [_tensor(INPUT_NAME, "TYPE_FP32", list(model.spec.input.shape))]
    outputs = [_tensor(n, "TYPE_FP32", d) for n, d in latent_dims.items()]
    _write_config(model_dir, runtime, max_batch_size, inputs, outputs, batching=True)
    return model_dir


def _write_head(constants: HeadConstants, model_dir: Path, latent_dims: dict[str, list[int]],
                classes: int, *, max_batch_size: int, mc_impl: str) -> Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    constants.save(model_dir / "1" / HEAD_CONSTANTS_FILENAME)
    (model_dir / "1" / "model.py").write_text(HEAD_MODEL_PY)
    inputs = [_tensor(n, "TYPE_FP32", d) for n, d in latent_dims.items()]
    outputs = _head_outputs(classes, constants.top_k, constants.num_confusable, reshape=True)
    parameters = {"FORCE_CPU_ONLY_INPUT_TENSORS": "no", MC_IMPL_PARAMETER: mc_impl}
    _write_config(model_dir, 'backend: "python"', max_batch_size, inputs, outputs,
                  batching=True, parameters=parameters)
    return model_dir


def _write_ensemble(model_dir: Path, card: ModelCard, backbone: str, head: str,
                    latent_dims: dict[str, list[int]], *, max_batch_size: int) -> Path:
    version_dir = model_dir / "1"  # Triton wants a version directory, even for an ensemble;
    version_dir.mkdir(parents=True, exist_ok=True)  # the placeholder keeps it in git
    (version_dir / ".gitkeep").touch()
    (model_dir / MODEL_CARD_FILENAME).write_text(card.model_dump_json(indent=2) + "\n")
    (model_dir / "labels.txt").write_text("\n".join(card.labels) + "\n")
    output_names = [spec.name.value for spec in HEAD_OUTPUTS]

    def step(model: str, inputs: list[str], outputs: list[str]) -> str:
        maps = [f'input_map {{ key: "{n}" value: "{n}" }}' for n in inputs]
        maps += [f'output_map {{ key: "{n}" value: "{n}" }}' for n in outputs]
        body = "\n      ".join(maps)
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n      {body}\n    }}'

    scheduling = (
        "ensemble_scheduling {\n  step [\n"
        + ",\n".join([step(backbone, [INPUT_NAME], list(latent_dims)),
                      step(head, list(latent_dims), output_names)])
        + "\n  ]\n}\n"
    )
    inputs = [_tensor(INPUT_NAME, "TYPE_FP32", list(card.input.shape))]
    outputs = _head_outputs(card.num_classes, card.top_k, card.num_confusable, reshape=False)
    _write_config(model_dir, 'platform: "ensemble"', max_batch_size, inputs, outputs,
                  batching=False, parameters={MODEL_CARD_PARAMETER: card.model_dump_json()},
                  extra=scheduling)
    return model_dir


def _head_outputs(classes: int, top_k: int, num_confusable: int, *, reshape: bool) -> list[str]:
    """HEAD_OUTPUTS as config tensors (``repository.head_output_configs``). [B] outputs are
    dims [1]; the head model (which returns [B]) keeps their ``reshape: []``; the ensemble,
    which only sees the head's [B, 1], does not."""
    configs = head_output_configs(num_classes=classes, top_k=top_k,
                                  num_confusable=num_confusable)
    return [_tensor(c.name, c.data_type, list(c.dims), reshape=reshape and c.reshape is not None)
            for c in configs]


def _tensor(name: str, dtype: str, dims: list[int], *, reshape: bool = False) -> str:
    """One config.pbtxt tensor; [B] outputs are declared [1] reshaped to [] (batch dim only)."""
    extra = " reshape: { shape: [ ] }" if reshape else ""
    return f'  {{ name: "{name}" data_type: {dtype} dims: {dims}{extra} }}'


def _write_config(model_dir: Path, runtime: str, max_batch_size: int, inputs: list[str],
                  outputs: list[str], *, batching: bool, parameters: dict[str, str] | None = None,
                  extra: str = "") -> None:
    lines = [f'name: "{model_dir.name}"', runtime, f"max_batch_size: {max_batch_size}",
             "input [\n" + ",\n".join(inputs) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]"]
    if batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}")
        lines.append("instance_group [ { count: 1 } ]")  # no kind: GPU where present, else CPU
    for key, value in (parameters or {}).items():
        value_text = f"{{ string_value: {quoted(value)} }}"
        lines.append(f"parameters {{ key: {quoted(key)} value {value_text} }}")
    (model_dir / "config.pbtxt").write_text("\n".join(lines) + "\n" + extra)



def main() -> None:
    """CLI: ``python -m hetexport.fused.ensemble CHECKPOINT REPO [--reference DIR] ...``."""
    import typer

    def write(checkpoint: Path, repo: Path, reference: Path | None = None,
              name: str = ENSEMBLE_NAME, seed: int = DEFAULT_SEED,
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
