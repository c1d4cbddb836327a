"""``hetexport``: train a HET classifier, export it into a Triton model repository, run the demo.

Typical usage::

    hetexport train --epochs 4 --noise-rate 0.3 --checkpoint runs/het.pt --metrics runs/het.json
    hetexport train --image-folder photos/ --image-size 64 --channels RGB --checkpoint runs/mine.pt
    hetexport train --image-folder photos/ --val-folder photos_val/ --image-size 64 \
        --channels RGB --backbone torchvision:resnet18 --init-weights weights/resnet18.pt \
        --freeze-backbone --checkpoint runs/mine.pt        # HET head on a pretrained ResNet
    hetexport export runs/het.pt --model-repo model_repo --name fashion_het --mc-samples 256
    hetexport export runs/het.pt --name fashion_het --mc-error 0.01 \
        --error-images /usr/share/datasets/fashion-mnist      # S chosen by the error asked for
    hetexport export runs/het.pt --name fashion_het --mc-samples 128 --bank-design optimized \
        --error-images /usr/share/datasets/fashion-mnist --error-image-count 1000  # fitted bank
    hetexport export runs/het.pt --name fashion_het \
        --calibration-images held_out/ --calibration-labels noisy   # decisions with guarantees
    hetexport calibrate model_repo/fashion_het --images held_out/ --labels noisy  # recalibrate
    hetexport mc-error runs/het.pt --model-dir model_repo/fashion_het  # served vs exact
    hetexport export runs/het_v2.pt --model-repo model_repo --name fashion_het --version next
    hetexport demo --model-repo model_repo --report-dir reports        # what `make models` runs
    hetexport audit --image-folder photos/ --output audit.csv   # wrong labels, 4-fold models
    hetexport gpu-repo model_repo model_repo_cuda                      # for docker-compose

Expected failures (missing data, bad checkpoint, invalid options) print ``error: <reason>`` on
stderr and exit with status 1, without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from hetexport.data import DEFAULT_FASHION_MNIST_DIR, held_out_images
from hetexport.data.held_out import DEFAULT_ERROR_IMAGES
from hetexport.errors import HetExportError
from hetexport.label_noise import DEFAULT_NOISE_RATE
from hetexport.layers.heads import DEFAULT_MC_SAMPLES as DEFAULT_EVAL_MC_SAMPLES
from hetexport.layers.heads import DEFAULT_NUM_FACTORS
from hetexport.layers.noise_bank import (
    AUTO_DESIGN,
    BANK_DESIGNS,
    DEFAULT_BANK_DESIGN,
    FITTED_DESIGN,
)
from hetexport.onnx.export import DEFAULT_NOISE_SEED
from hetexport.onnx.sampling_plan import DEFAULT_EXPORT_MC_SAMPLES
from hetexport.repo.config import DEFAULT_MAX_BATCH_SIZE
from hetexport.training.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_NUM_THREADS,
    DEFAULT_TRAIN_MC_SAMPLES,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train HET classifiers under label noise and export them for Triton.",
)

DEFAULT_CHECKPOINT = Path("runs/model.pt")
DEFAULT_METRICS = Path("runs/metrics.json")
EXIT_FAILURE = 1


class HeadKind(StrEnum):
    het = "het"
    het_pe = "het_pe"
    het_sigmoid = "het_sigmoid"
    het_xl = "het_xl"
    det = "det"


class Channels(StrEnum):
    L = "L"
    RGB = "RGB"


class LabelSource(StrEnum):
    auto = "auto"
    noisy = "noisy"
    clean = "clean"
    unknown = "unknown"


class Normalization(StrEnum):
    auto = "auto"
    folder = "folder"
    imagenet = "imagenet"


@contextmanager
def _clean_failure() -> Iterator[None]:
    """Turn hetexport's own errors (and invalid values) into one line on stderr, exit 1."""
    try:
        yield
    except (HetExportError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None


def _backbone_kwargs(backbone: str, user_json: str | None, *, input_shape: tuple[int, ...]
                     ) -> dict[str, Any]:
    """``default_backbone_kwargs`` with the ``--backbone-kwargs`` JSON object on top."""
    from hetexport.backbones import default_backbone_kwargs

    kwargs = default_backbone_kwargs(backbone, input_shape)
    if user_json:
        extra = json.loads(user_json)
        if not isinstance(extra, dict):
            raise ValueError(f"--backbone-kwargs must be a JSON object, got {user_json!r}")
        kwargs.update(extra)
    return kwargs


DataDir = Annotated[
    Path, typer.Option(help="directory with the 4 Fashion-MNIST IDX files (gz or not)")
]
TrainLimit = Annotated[int | None, typer.Option(help="use only the first N training images")]
TestLimit = Annotated[int | None, typer.Option(help="use only the first N test images")]
Threads = Annotated[int, typer.Option(min=1, help="torch threads")]
Progress = Annotated[bool, typer.Option(help="progress bars")]
ImageFolder = Annotated[
    Path | None, typer.Option(help="train on DIR/<class>/<image> instead of Fashion-MNIST")
]
NumFactors = Annotated[int, typer.Option("--num-factors", "-R", help="R, low-rank factors")]
CALIBRATION_IMAGES_HELP = (
    "labelled held-out images: an image folder DIR/<label>/<image> (a label's '/' as '_', or "
    "the class id) or a Fashion-MNIST IDX directory (its test split)")
CalibrationImages = Annotated[Path | None, typer.Option(
    help=CALIBRATION_IMAGES_HELP + "; the model card then carries the thresholds of prediction "
    "sets, abstention at a stated risk and the label-free accuracy estimate")]
CalibrationLabels = Annotated[LabelSource, typer.Option(
    help="whether the calibration labels are noisy or clean (auto: clean for the Fashion-MNIST "
         "test split, else unknown); the guarantees hold for labels like these")]
CalibrationCount = Annotated[int | None, typer.Option(
    min=2, help="use a seeded random subset of this many calibration images")]
NoiseRate = Annotated[float, typer.Option(help="Fashion-MNIST: injected label-noise rate")]
McSamples = Annotated[int, typer.Option(min=1)]


@app.command()
def train(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint to write")] = DEFAULT_CHECKPOINT,
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")] = DEFAULT_METRICS,
    data_dir: DataDir = DEFAULT_FASHION_MNIST_DIR,
    image_folder: ImageFolder = None,
    image_size: Annotated[int, typer.Option(help="image folder: resize to SIZE x SIZE")] = 28,
    channels: Annotated[Channels, typer.Option(help="image folder: L or RGB")] = Channels.L,
    val_folder: Annotated[Path | None, typer.Option(
        help="image folder: validation images DIR/<class>/<image> (default: a seeded hold-out "
             "of --val-fraction of --image-folder)")] = None,
    val_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="image folder: hold-out fraction without --val-folder")] = 0.1,
    split_seed: Annotated[int, typer.Option(help="image folder: seed of the hold-out")] = 0,
    normalization: Annotated[Normalization, typer.Option(
        help="image folder: mean/std from the training images (folder), ImageNet's "
             "(imagenet, for pretrained torchvision weights); auto: imagenet for torchvision "
             "backbones, else folder")] = Normalization.auto,
    backbone: Annotated[str, typer.Option(
        help="small_cnn, torchvision:ARCH (resnet18, resnet50, efficientnet_b0, "
             "convnext_tiny, ...: classifier removed) or package.module:factory")] = "small_cnn",
    backbone_kwargs: Annotated[str | None, typer.Option(
        help="JSON object of keyword arguments for the backbone factory")] = None,
    init_weights: Annotated[Path | None, typer.Option(
        help="a local state dict for the backbone (torch.save(model.state_dict(), PATH)); "
             "nothing is downloaded")] = None,
    freeze_backbone: Annotated[bool, typer.Option(
        help="train only the HET head on the backbone's pre-logits (computed once)")] = False,
    head: Annotated[HeadKind, typer.Option(help="output layer")] = HeadKind.het,
    num_factors: NumFactors = DEFAULT_NUM_FACTORS,
    temperature: Annotated[float, typer.Option(help="tau (initial value if learned)")] = 1.0,
    learn_temperature: Annotated[bool, typer.Option(help="learn tau within bounds")] = False,
    epochs: Annotated[int, typer.Option(min=1, help="epochs (with --patience: at most)")] = (
        DEFAULT_EPOCHS),
    patience: Annotated[int | None, typer.Option(
        min=1, help="stop once the validation NLL has not improved for N epochs")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = DEFAULT_BATCH_SIZE,
    learning_rate: Annotated[float, typer.Option()] = DEFAULT_LEARNING_RATE,
    seed: Annotated[int, typer.Option(help="weights, batches and MC noise")] = 0,
    noise_rate: NoiseRate = DEFAULT_NOISE_RATE,
    noise_seed: Annotated[int, typer.Option(help="Fashion-MNIST: label-noise seed")] = 0,
    train_mc_samples: McSamples = DEFAULT_TRAIN_MC_SAMPLES,
    eval_mc_samples: McSamples = DEFAULT_EVAL_MC_SAMPLES,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    threads: Threads = DEFAULT_NUM_THREADS,
    progress: Progress = True,
) -> None:
    """Train on noisy labels (choices on a noisy validation split), save checkpoint + metrics."""
    from hetexport.model import ModelSpec
    from hetexport.training import TrainConfig
    from hetexport.training.experiment import default_normalization, prepare_training_data
    from hetexport.training.run import train_and_save

    with _clean_failure():
        data = prepare_training_data(
            data_dir, image_folder, image_size=image_size, channel_order=channels.value,
            noise_rate=noise_rate, noise_seed=noise_seed, train_limit=train_limit,
            test_limit=test_limit, val_folder=val_folder, val_fraction=val_fraction,
            split_seed=split_seed,
            normalization=(default_normalization(backbone)
                           if normalization is Normalization.auto else normalization.value))
        spec = ModelSpec(
            num_classes=len(data.class_names), head=head.value, backbone=backbone,
            backbone_kwargs=_backbone_kwargs(backbone, backbone_kwargs,
                                             input_shape=tuple(data.input_spec.shape)),
            num_factors=num_factors, temperature=temperature,
            learn_temperature=learn_temperature, train_mc_samples=train_mc_samples,
            eval_mc_samples=eval_mc_samples, labels=data.class_names, input=data.input_spec,
        )
        config = TrainConfig(epochs=epochs, patience=patience, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, num_threads=threads,
                             progress=progress, freeze_backbone=freeze_backbone)
        record = train_and_save(spec, data, config, checkpoint=checkpoint, record_path=metrics,
                                init_weights=init_weights, noise_rate=noise_rate)
    typer.echo(f"checkpoint: {checkpoint}\nmetrics: {metrics}\n{json.dumps(record['metrics'])}")


@app.command()
def audit(
    image_folder: Annotated[Path, typer.Option(
        help="the training set to audit: DIR/<class>/<image>")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="the audit CSV; OUT.summary.json and OUT.html beside it")
    ] = Path("audit.csv"),
    folds: Annotated[int, typer.Option(min=2, help="k of the k-fold models")] = 4,
    image_size: Annotated[int, typer.Option(help="resize to SIZE x SIZE")] = 28,
    channels: Annotated[Channels, typer.Option(help="L or RGB")] = Channels.L,
    backbone: Annotated[str, typer.Option(help="as for `hetexport train`")] = "small_cnn",
    backbone_kwargs: Annotated[str | None, typer.Option(
        help="JSON object of keyword arguments for the backbone factory")] = None,
    head: Annotated[HeadKind, typer.Option(help="output layer")] = HeadKind.het,
    num_factors: NumFactors = DEFAULT_NUM_FACTORS,
    temperature: Annotated[float, typer.Option(help="tau")] = 0.5,
    epochs: Annotated[int, typer.Option(min=1)] = DEFAULT_EPOCHS,
    batch_size: Annotated[int, typer.Option(min=1)] = DEFAULT_BATCH_SIZE,
    learning_rate: Annotated[float, typer.Option()] = DEFAULT_LEARNING_RATE,
    seed: Annotated[int, typer.Option(help="folds, weights, batches and MC noise")] = 0,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="flag a label when P(wrong) exceeds this")] = 0.5,
    threads: Threads = DEFAULT_NUM_THREADS,
    progress: Progress = True,
) -> None:
    """Find the wrong labels of a training set: out-of-sample probabilities from k-fold
    models, scored like `hetclient audit` (same CSV)."""
    from hetcontract.audit_report import summary_text

    from hetexport.audit.training_set import FoldModel, audit_image_folder
    from hetexport.training import TrainConfig

    with _clean_failure():
        count = 1 if channels is Channels.L else 3
        model = FoldModel(
            head=head.value, num_factors=num_factors, temperature=temperature,
            backbone=backbone, image_size=image_size, channels=channels.value,
            backbone_kwargs=_backbone_kwargs(backbone, backbone_kwargs,
                                             input_shape=(count, image_size, image_size)),
        )
        config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             seed=seed, num_threads=threads, progress=progress)
        summary, files, seconds = audit_image_folder(
            image_folder, output, model=model, config=config, folds=folds,
            threshold=threshold, seed=seed)
    typer.echo(f"{summary_text(summary)}\n{folds} fold models in {seconds:.0f} s; wrote "
               f"{files.csv}, {files.summary_json}, {files.page}")


BankDesign = StrEnum("BankDesign", {name: name for name in (AUTO_DESIGN, *BANK_DESIGNS,
                                                               FITTED_DESIGN)})
DEFAULT_DESIGN = BankDesign(DEFAULT_BANK_DESIGN)
MC_ERROR_REPORT_IMAGES = 400
"""Held-out images ``hetexport mc-error`` reports an exported model's error on by default."""


NEXT_VERSION = "next"


def _version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"a version is a number >= 1 or {NEXT_VERSION!r}, got {text!r}",
                                 param_hint="--version")
    return int(text)


def _check_export_options(*, mc_samples: int | None, mc_error: float | None,
                          error_images: Path | None, bank_design: BankDesign) -> None:
    """The option combinations an export cannot do, in the options' own names."""
    if mc_samples is not None and mc_error is not None:
        raise ValueError("give either --mc-samples (S) or --mc-error (S chosen), not both")
    if error_images is None and mc_error is not None:
        raise ValueError("--mc-error needs held-out images to measure the error on: give "
                         "--error-images")
    if error_images is None and bank_design.value == FITTED_DESIGN:
        raise ValueError(f"--bank-design {FITTED_DESIGN} is fitted on held-out images: give "
                         "--error-images")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint from `hetexport train`")],
    model_repo: Annotated[Path, typer.Option(help="Triton model repository")] = Path("model_repo"),
    name: Annotated[str, typer.Option(help="model directory under the repository")] = "model",
    mc_samples: Annotated[
        int | None, typer.Option(min=1, help="S baked into the graph (default 256, or chosen "
                                             "by --mc-error)")
    ] = None,
    mc_error: Annotated[
        float | None, typer.Option(min=0.0, help="choose the smallest S whose p_bar error "
                                                 "(p99 over held-out images) is at most this")
    ] = None,
    error_images: Annotated[
        Path | None, typer.Option(help="held-out images to measure the error on (Fashion-MNIST "
                                       "IDX directory: its test split; or an image folder); the "
                                       "model card then records every served quantity's error")
    ] = None,
    error_image_count: Annotated[int, typer.Option(min=2)] = DEFAULT_ERROR_IMAGES,
    bank_design: Annotated[
        BankDesign, typer.Option(help="points of the baked noise bank")
    ] = DEFAULT_DESIGN,
    top_k: Annotated[int | None, typer.Option(
        min=1, help="k_max of the graph (default: min(5, K))")] = None,
    num_confusable: Annotated[int | None, typer.Option(
        min=0, help="confusable classes per top class (default: min(3, K - 1))")] = None,
    max_batch_size: Annotated[int, typer.Option(min=1)] = DEFAULT_MAX_BATCH_SIZE,
    seed: Annotated[int, typer.Option(help="seed of the baked noise bank")] = DEFAULT_NOISE_SEED,
    calibration_images: CalibrationImages = None,
    calibration_labels: CalibrationLabels = LabelSource.auto,
    calibration_count: CalibrationCount = None,
    version: Annotated[str | None, typer.Option(
        help="N or 'next': add version N (next: the newest existing + 1) beside the existing "
             "ones, which stay for a roll-back; a running `hetgateway serve` loads it without "
             "a restart [default: replace the model by version 1]")] = None,
) -> None:
    """Checkpoint -> model_repo/<name>/{config.pbtxt, <N>/model.onnx, model_card.json,
    labels.txt}."""
    from hetexport.checkpoint import load_checkpoint
    from hetexport.onnx.export import export_to_repository
    from hetexport.repo.layout import next_version

    with _clean_failure():
        _check_export_options(mc_samples=mc_samples, mc_error=mc_error,
                              error_images=error_images, bank_design=bank_design)
        number = None
        if version == NEXT_VERSION:
            number = next_version(model_repo, name)
        elif version is not None:
            number = _version_number(version)
        images = calibration = spec = None
        if error_images is not None or calibration_images is not None:
            spec = load_checkpoint(checkpoint).model.spec
        if (error_images is not None or calibration_images is not None) and spec is None:
            raise HetExportError("the checkpoint has no input spec to read images with")
        if error_images is not None:
            images = held_out_images(error_images, spec.input, limit=error_image_count)
        if calibration_images is not None:
            from hetexport.calibration.recalibrate import load_calibration_set

            calibration = load_calibration_set(
                calibration_images, spec.input, list(spec.labels),
                label_source=calibration_labels.value, limit=calibration_count)
        report = export_to_repository(
            checkpoint, model_repo, name, mc_samples=mc_samples, top_k=top_k,
            num_confusable=num_confusable, max_batch_size=max_batch_size, seed=seed,
            design=bank_design.value, mc_error=mc_error, error_images=images, version=number,
        )
        card = report.card
        if calibration is not None:
            from hetexport.calibration.recalibrate import recalibrate_model

            card = recalibrate_model(report.model_dir, calibration, version=report.version)
    mc = card.monte_carlo
    typer.echo(f"exported {report.model_dir} version {report.version} ({report.onnx_bytes} "
               "bytes of ONNX); parity "
               f"{json.dumps(report.parity.max_abs_diff)}")
    if mc is not None:
        typer.echo(f"S = {mc.samples} ({mc.design}); error vs exact: "
                   f"{json.dumps({k: v.model_dump() for k, v in mc.error.items()})}")
    if card.calibration is not None:
        typer.echo(_calibration_summary(card.calibration))


@app.command()
def calibrate(
    model_dir: Annotated[Path, typer.Argument(help="an exported model: model_repo/<name>")],
    images: Annotated[Path, typer.Option(help=CALIBRATION_IMAGES_HELP)],
    labels: CalibrationLabels = LabelSource.auto,
    count: CalibrationCount = None,
) -> None:
    """Calibrate an exported model's decisions on labelled held-out images: its card (file and
    config.pbtxt) gains prediction-set, abstention and accuracy-estimate thresholds."""
    from hetexport.calibration.recalibrate import (
        load_calibration_set,
        read_card,
        recalibrate_model,
    )

    with _clean_failure():
        card = read_card(model_dir)
        held_out = load_calibration_set(images, card.input, list(card.labels),
                                        label_source=labels.value, limit=count)
        card = recalibrate_model(model_dir, held_out)
    assert card.calibration is not None
    typer.echo(f"calibrated {model_dir}: {_calibration_summary(card.calibration)}")


def _calibration_summary(calibration: Any) -> str:
    sets = calibration.prediction_sets
    rules = ", ".join(
        f"{level.risk:g}: {level.score} accepts {100 * level.accepted_fraction:.1f} %"
        for level in calibration.abstention.levels)
    methods = ", ".join(f"{c:g}: {sets.chosen(c).method}" for c in sets.coverages)
    return (f"calibration on {calibration.images} {calibration.label_source}-label images "
            f"({calibration.tuning_images} for tuning); sets {methods}; abstention at delta "
            f"{calibration.abstention.delta:g} {rules}; accuracy "
            f"{calibration.accuracy_estimate.accuracy:.4f} (ATC on "
            f"{calibration.accuracy_estimate.score})")


@app.command("mc-error")
def mc_error_report(
    checkpoint: Annotated[Path, typer.Argument(help="the model's checkpoint (its latents)")],
    model_dir: Annotated[
        Path | None, typer.Option(help="an exported model (model_repo/<name>): measure its ONNX "
                                       "graph; default: the graph an export would bake now")
    ] = None,
    images: Annotated[Path, typer.Option(help="Fashion-MNIST IDX directory or image folder")] = (
        DEFAULT_FASHION_MNIST_DIR),
    count: Annotated[int, typer.Option(min=2, help="held-out images")] = MC_ERROR_REPORT_IMAGES,
    mc_samples: Annotated[int, typer.Option(min=1)] = DEFAULT_EXPORT_MC_SAMPLES,
    bank_design: Annotated[BankDesign, typer.Option()] = DEFAULT_DESIGN,
    seed: Annotated[int, typer.Option()] = DEFAULT_NOISE_SEED,
) -> None:
    """Every served quantity against the exact integral: mean and p99 error over the images."""
    from hetexport.checkpoint import load_checkpoint
    from hetexport.exact.measure import head_error, reference_for
    from hetexport.layers import NoiseBank
    from hetexport.onnx.runner import OnnxRunner

    with _clean_failure():
        model = load_checkpoint(checkpoint).model.eval()
        if model.spec is None:
            raise HetExportError("the checkpoint has no input spec to read images with")
        batch = held_out_images(images, model.spec.input, limit=count)
        reference = reference_for(model, batch)
        if model_dir is not None:
            served = OnnxRunner(model_dir / "1" / "model.onnx").run(batch.numpy())
            report = head_error(model, batch, reference, served=served)
        else:
            head = model.head
            bank = NoiseBank.fixed(mc_samples, head.num_factors, head.diag_noise_dim, seed=seed,
                                   design=bank_design.value)
            report = head_error(model, batch, reference, bank=bank)
    typer.echo(json.dumps({"images": report.images, "reference": reference.description,
                           "reference_standard_error": report.largest_reference_error(),
                           "error": report.summary()}, indent=2))


@app.command("gpu-repo")
def gpu_repo(
    source: Annotated[Path, typer.Argument(help="a CPU model repository, e.g. model_repo")],
    target: Annotated[Path, typer.Argument(help="a new directory, e.g. model_repo_cuda")],
) -> None:
    """Copy a model repository with its ONNX models on KIND_GPU (CUDA EP + TensorRT)."""
    from hetexport.repo.gpu import write_gpu_repository

    with _clean_failure():
        on_gpu = write_gpu_repository(source, target)
    typer.echo(f"wrote {target}; on the GPU: {', '.join(on_gpu)}")


@app.command()
def demo(
    model_repo: Annotated[Path, typer.Option(help="gets fashion_het, fashion_det")] = Path(
        "model_repo"
    ),
    report_dir: Annotated[Path, typer.Option(help="report and plots")] = Path("reports"),
    data_dir: DataDir = DEFAULT_FASHION_MNIST_DIR,
    work_dir: Annotated[Path, typer.Option(help="checkpoints (git-ignored)")] = Path("runs/demo"),
    seeds: Annotated[int, typer.Option(min=1, help="seeds 0..N-1 per head")] = 3,
    epochs: Annotated[int | None, typer.Option(
        min=1, help="at most this many epochs for the main runs [default: the demo's]")] = None,
    patience: Annotated[int | None, typer.Option(
        min=1, help="main runs stop once the noisy-validation NLL has not improved for N "
                    "epochs [default: the demo's]")] = None,
    grid_epochs: Annotated[int | None, typer.Option(min=1)] = None,
    sweep_epochs: Annotated[int | None, typer.Option(min=1)] = None,
    train_limit: TrainLimit = None,
    test_limit: TestLimit = None,
    threads: Threads = DEFAULT_NUM_THREADS,
    progress: Progress = True,
    reuse_checkpoints: Annotated[bool, typer.Option(
        help="no training: re-evaluate and re-export the seed-0 checkpoints in --work-dir, "
             "keeping the previous report's training figures")] = False,
    export_mc_samples: Annotated[int | None, typer.Option(
        min=1, help="S baked into the exported HET model [default: the demo's, 128]")] = None,
    bank_design: Annotated[BankDesign | None, typer.Option(
        help="the exported HET model's noise bank [default: the demo's, optimized: fitted "
             "on the first half of the error images]")] = None,
    error_image_count: Annotated[int | None, typer.Option(
        min=2, help="clean test images the export chooses the bank on (first half) and "
                    "measures it on (second half) [default: the demo's, 1000]")] = None,
    calibrate_only: Annotated[bool, typer.Option(
        help="no training, no export: calibrate the demo models already in --model-repo on "
             "the demo's held-out noisy validation split")] = False,
) -> None:
    """The Fashion-MNIST label-noise demo: choose, train, compare, plot, report, export."""
    from hetexport.studies.demo import (
        DemoConfig,
        calibrate_demo_models,
        reevaluate_demo,
        run_demo,
    )
    from hetexport.studies.demo_report import write_demo_report
    from hetexport.studies.report import REPORT_JSON

    with _clean_failure():
        overrides = {key: value for key, value in
                     {"epochs": epochs, "patience": patience, "grid_epochs": grid_epochs,
                      "sweep_epochs": sweep_epochs, "export_mc_samples": export_mc_samples,
                      "export_bank_design": bank_design and bank_design.value,
                      "error_images": error_image_count}.items() if value is not None}
        config = DemoConfig(
            model_repo=model_repo, data_dir=data_dir, work_dir=work_dir,
            seeds=tuple(range(seeds)), train_limit=train_limit, test_limit=test_limit,
            num_threads=threads, progress=progress, **overrides,
        )
        if calibrate_only:
            calibrated = calibrate_demo_models(config)
            typer.echo(f"calibrated: {', '.join(str(path) for path in calibrated.values())}")
            return
        run = (reevaluate_demo(config, report_dir / REPORT_JSON) if reuse_checkpoints
               else run_demo(config))
        written = write_demo_report(run, report_dir)
    seconds = run.seconds if run.reevaluation is None else run.reevaluation.seconds
    typer.echo(f"report: {written.report_markdown}\nmodels: "
               f"{', '.join(str(path) for path in run.exported.values())}\n"
               f"took {seconds / 60:.1f} min")


@app.command()
def claims(
    report_dir: Annotated[Path, typer.Option(help="claims.json, claims.md and plots")] = Path(
        "reports"
    ),
    data_dir: DataDir = DEFAULT_FASHION_MNIST_DIR,
    work_dir: Annotated[Path, typer.Option(help="finished pairs, for resuming (git-ignored)")] = (
        Path("runs/claims")
    ),
    demo_report: Annotated[Path, typer.Option(help="where R and tau come from")] = Path(
        "reports/demo_report.json"
    ),
    seeds: Annotated[int | None, typer.Option(min=2, help="seeds 0..N-1 at the demo's rate")] = (
        None
    ),
    sweep_seeds: Annotated[int | None, typer.Option(min=2, help="seeds 0..N-1 per sweep rate")] = (
        None
    ),
    sweep_rates: Annotated[str | None, typer.Option(help="comma-separated noise rates")] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    train_limit: Annotated[int | None, typer.Option(
        min=1, help="use only the first N training images (default: the claims' subset)")] = None,
    full_train: Annotated[bool, typer.Option(help="all 60k training images")] = False,
    test_limit: TestLimit = None,
    num_factors: Annotated[int | None, typer.Option("--num-factors", "-R", help="default: the "
                                                    "demo's choice")] = None,
    temperature: Annotated[float | None, typer.Option(help="default: the demo's choice")] = None,
    eval_mc_samples: Annotated[int | None, typer.Option(min=2, help="HET samples behind the "
                                                        "metrics")] = None,
    bank_samples: Annotated[int | None, typer.Option(min=2, help="samples of the noise bank "
                                                     "behind the confusable classes")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads per worker")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="training processes")] = None,
    progress: Progress = True,
    resume: Annotated[bool, typer.Option(help="reuse pairs finished by an earlier run with the "
                                         "same settings")] = True,
    train: Annotated[bool, typer.Option(help="no: report from the pairs stored in --work-dir "
                                        "only, listing the missing ones")] = True,
) -> None:
    """The paper's claims with 95 % intervals: HET vs det paired by seed, across noise rates,
    and the per-input confusable precision (see hetexport.studies.claims)."""
    from hetexport.studies.claims import ClaimsConfig, run_claims
    from hetexport.studies.claims_report import write_claims_report

    with _clean_failure():
        given = {
            "seeds": None if seeds is None else tuple(range(seeds)),
            "sweep_seeds": None if sweep_seeds is None else tuple(range(sweep_seeds)),
            "sweep_rates": None if sweep_rates is None
            else tuple(float(rate) for rate in sweep_rates.split(",")),
            "epochs": epochs, "train_limit": train_limit, "test_limit": test_limit,
            "num_factors": num_factors, "temperature": temperature,
            "eval_mc_samples": eval_mc_samples, "bank_samples": bank_samples,
            "num_threads": threads, "workers": workers,
        }
        overrides = {key: value for key, value in given.items() if value is not None}
        if full_train:
            overrides["train_limit"] = None
        config = ClaimsConfig(data_dir=data_dir, work_dir=work_dir, demo_report=demo_report,
                              progress=progress, resume=resume, train_missing=train,
                              **overrides)
        run = run_claims(config)
        written = write_claims_report(run, report_dir)
    typer.echo(f"report: {written.report_markdown}\nplots: "
               f"{', '.join(str(path) for path in written.plots.values())}\n"
               f"took {run.seconds / 60:.1f} min")
