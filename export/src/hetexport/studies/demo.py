"""The Fashion-MNIST label-noise demo behind ``make models`` (``hetexport demo``): the runs.

Steps, all seeded:

1. Inject correlated, input-dependent label noise (``hetexport.label_noise``, rate 0.3 of the
   group images) into the training split; hold out a noisy validation split (10 %).
2. Choose the HET head's (R, temperature) on the NOISY validation NLL from a small grid, each
   point trained ``grid_epochs`` epochs with seed 0.
3. Train HET (chosen settings) and the deterministic head with every seed until the
   noisy-validation NLL has not improved for ``patience`` epochs (at most ``epochs``); each
   run keeps the epoch with the lowest noisy-validation NLL. Score on the CLEAN test set.
4. A noise sweep (one seed, fewer epochs): clean-test top-1 and NLL of both heads when trained
   at other noise rates.
5. Rank class pairs by the HET model's CENTRED latent correlation (of ``C Sigma C``,
   ``C = I - 1 1^T / K``) averaged over the clean test set (and over seeds), most negative
   first: a softmax head never learns the all-ones part of Sigma (a common shift of all
   logits changes nothing), and in the identifiable part a confused pair is one whose logits
   move in opposite directions, trading probability mass. The within-group pairs should lead.
   The raw-correlation ranking is reported beside it for comparison.
6. The seed-0 models exported as ``fashion_het`` and ``fashion_det``; their decisions
   calibrated on the held-out noisy validation split (``demo_calibration``, the calibration
   stage ``hetexport.calibration``). ``calibrate_demo_models`` does only that, for models
   already exported (``hetexport demo --calibrate-only``).

``run_demo`` returns all of it as data (``DemoRun``); ``hetexport.studies.demo_report`` turns
that into ``demo_report.json`` / ``demo_report.md`` and the plots.

``reevaluate_demo`` skips steps 1-4 (no training): it re-scores the seed-0 checkpoints already
in ``work_dir`` on the clean test set (the same ``predict`` as step 3), redoes steps 5-6 from
them and keeps the training figures (grid, seeds, sweep) of the previous full run's report;
the report says so.

Typical usage::

    run = run_demo(DemoConfig(model_repo=Path("model_repo")))
    write_demo_report(run, Path("reports"))            # hetexport.studies.demo_report
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from hetexport.calibration import CalibrationSet
from hetexport.calibration.recalibrate import recalibrate_model
from hetexport.checkpoint import load_checkpoint, save_checkpoint
from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.data.held_out import DEFAULT_ERROR_IMAGES
from hetexport.errors import InputError
from hetexport.label_noise import DEFAULT_NOISE_RATE, FASHION_MNIST_NOISY_GROUPS, LabelNoise
from hetexport.layers.heads import DEFAULT_MC_SAMPLES as DEFAULT_EVAL_MC_SAMPLES
from hetexport.layers.noise_bank import FITTED_DESIGN
from hetexport.model import ModelSpec
from hetexport.onnx.export import DEFAULT_NOISE_SEED as EXPORT_NOISE_SEED
from hetexport.onnx.export import (
    DEFAULT_NUM_CONFUSABLE,
    DEFAULT_TOP_K,
    export_to_repository,
)
from hetexport.repo.config import DEFAULT_MAX_BATCH_SIZE
from hetexport.studies.summary import (
    MetricSummary,
    PairCorrelation,
    SeedRun,
    SweepPoint,
    rank_class_pairs,
    seed_run_from_json,
    summarize_runs,
)
from hetexport.training import TrainConfig
from hetexport.training.config import DEFAULT_TRAIN_MC_SAMPLES
from hetexport.training.evaluation import predict
from hetexport.training.experiment import (
    Fitted,
    PreparedData,
    fit,
    fitted_metrics,
    prepare_fashion_mnist,
)

HET_MODEL_NAME = "fashion_het"
DET_MODEL_NAME = "fashion_det"
MODEL_NAMES = {"het": HET_MODEL_NAME, "det": DET_MODEL_NAME}
"""Exported model (and checkpoint file) name of each head."""
DEMO_SEEDS = (0, 1, 2)
DEMO_EPOCHS = 12
DEMO_PATIENCE = 3
"""The main runs train until the noisy-validation NLL has not improved for 3 epochs, at most
12 (the learning rate decays over the 12); measured before choosing: on the full data the
seed-0 models' validation NLL stopped improving after 8 epochs with a 30-epoch budget, and 5
fixed epochs (the earlier default) left every run's best epoch at its last."""
DEMO_GRID_EPOCHS = 2
DEMO_SWEEP_RATES = (0.0, 0.2, 0.4)
DEMO_SWEEP_EPOCHS = 2
DEMO_GRID: tuple[tuple[int, float], ...] = ((6, 0.5), (6, 1.0), (3, 0.5))
"""(R, temperature) points tried for the HET head: R = 6 is the CIFAR reference setting; in
pilot runs (2 epochs, full data) tau 0.5 beat 1.0 and 1.5 on the noisy validation NLL; R = 3
is the smaller alternative."""
DEMO_SUBSET_LIMIT = 20_000
"""The grid and the noise sweep train on the first 20k training images only (time budget on
two shared cores); the main runs use all 60k (54k train + 6k validation)."""
DEMO_BATCH_SIZE = 256
"""The demo's minibatch (``hetexport train`` defaults to ``training.config.DEFAULT_BATCH_SIZE``
for any model): the SmallCNN on 28x28 images trains faster per epoch at 256 on two cores."""
DEMO_BACKBONE_KWARGS: dict[str, Any] = {"widths": [8, 16], "feature_dim": 128}
"""The SmallCNN's own defaults, written out so the report and the claims' settings say them."""
DEMO_EXPORT_MC_SAMPLES = 128
DEMO_BANK_DESIGN = FITTED_DESIGN
"""The shipped HET model's bank: 128 points fitted to the model's latents (learned
quadrature, ``hetexport.exact.bank_fit``)."""


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Everything the demo does, with the defaults ``make models`` uses.

    ``train_limit`` / ``test_limit`` keep only the first N images (tests and quick looks);
    ``work_dir`` holds the checkpoints (git-ignored); ``export`` False skips step 6's export.
    """

    model_repo: Path
    data_dir: Path = DEFAULT_FASHION_MNIST_DIR
    work_dir: Path = Path("runs/demo")
    noise_rate: float = DEFAULT_NOISE_RATE
    seeds: tuple[int, ...] = DEMO_SEEDS
    epochs: int = DEMO_EPOCHS
    patience: int | None = DEMO_PATIENCE
    grid: tuple[tuple[int, float], ...] = DEMO_GRID
    grid_epochs: int = DEMO_GRID_EPOCHS
    sweep_rates: tuple[float, ...] = DEMO_SWEEP_RATES
    sweep_epochs: int = DEMO_SWEEP_EPOCHS
    subset_limit: int | None = DEMO_SUBSET_LIMIT
    batch_size: int = DEMO_BATCH_SIZE
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEMO_BACKBONE_KWARGS))
    train_mc_samples: int = DEFAULT_TRAIN_MC_SAMPLES
    eval_mc_samples: int = DEFAULT_EVAL_MC_SAMPLES
    export_mc_samples: int = DEMO_EXPORT_MC_SAMPLES
    export_bank_design: str = DEMO_BANK_DESIGN
    error_images: int = DEFAULT_ERROR_IMAGES
    top_k: int = DEFAULT_TOP_K
    num_confusable: int = DEFAULT_NUM_CONFUSABLE
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    train_limit: int | None = None
    test_limit: int | None = None
    num_threads: int = 2
    progress: bool = True
    export: bool = True


class GridRow(NamedTuple):
    """One grid point and its noisy-validation scores."""

    num_factors: int
    temperature: float
    val_top1: float
    val_nll: float
    val_ece: float


class CorrelationRanking(NamedTuple):
    """The HET model's mean latent correlations [K, K] (centred and raw) and the class pairs
    ranked by each: centred most negative first, raw most positive first; ``by_magnitude``:
    centred, by |correlation|."""

    centered: np.ndarray
    raw: np.ndarray
    ranking: list[PairCorrelation]
    raw_ranking: list[PairCorrelation]
    by_magnitude: list[PairCorrelation]


def rank_correlations(centered: np.ndarray, raw: np.ndarray,
                      class_names: tuple[str, ...]) -> CorrelationRanking:
    groups = FASHION_MNIST_NOISY_GROUPS
    return CorrelationRanking(
        centered, raw,
        rank_class_pairs(centered, class_names, groups, most_negative_first=True),
        rank_class_pairs(raw, class_names, groups),
        rank_class_pairs(centered, class_names, groups, by_magnitude=True))


class Reevaluation(NamedTuple):
    """What ``reevaluate_demo`` re-ran: the checkpoints (and when they were written, Unix
    seconds), its own time, and the previous full run's report it keeps the rest of."""

    checkpoints: dict[str, Path]
    written: dict[str, float]
    seconds: float
    previous: dict[str, Any]


class DemoRun(NamedTuple):
    """Everything the demo found, as data (``hetexport.studies.demo_report`` renders it).

    ``sizes``: train, validation and test images; ``test_probs``: the seed-0 models' clean-test
    probabilities [N, K] per head; ``reevaluation`` None for a full run."""

    config: DemoConfig
    class_names: tuple[str, ...]
    sizes: dict[str, int]
    noise: LabelNoise | None
    grid: list[GridRow]
    grid_seconds: float
    runs: list[SeedRun]
    summary: dict[str, dict[str, MetricSummary]]
    correlation: CorrelationRanking
    sweep: list[SweepPoint]
    sweep_seconds: float
    test_probs: dict[str, np.ndarray]
    test_labels: np.ndarray
    checkpoints: dict[str, Path]
    exported: dict[str, Path]
    seconds: float
    reevaluation: Reevaluation | None = None


def _log(config: DemoConfig, message: str) -> None:
    if config.progress:
        tqdm.write(f"[demo] {message}")


def _spec(config: DemoConfig, data: PreparedData, *, head: str, num_factors: int,
          temperature: float) -> ModelSpec:
    return ModelSpec(
        num_classes=len(data.class_names),
        head=head,
        backbone_kwargs=dict(config.backbone_kwargs),
        num_factors=num_factors if head != "det" else 0,
        temperature=temperature,
        train_mc_samples=config.train_mc_samples,
        eval_mc_samples=config.eval_mc_samples,
        labels=data.class_names,
        input=data.input_spec,
    )


def _train_config(config: DemoConfig, *, epochs: int, seed: int,
                  patience: int | None = None) -> TrainConfig:
    return TrainConfig(epochs=epochs, patience=patience, seed=seed, batch_size=config.batch_size,
                       num_threads=config.num_threads, progress=config.progress)


def _subset_limit(config: DemoConfig) -> int | None:
    limits = [limit for limit in (config.train_limit, config.subset_limit) if limit]
    return min(limits) if limits else None


def select_hyperparameters(config: DemoConfig) -> list[GridRow]:
    """Train the HET head at every grid point (seed 0, the first ``subset_limit`` training
    images, noise as in the main runs) and score it on that subset's noisy validation split;
    rows sorted best (lowest validation NLL) first."""
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate,
                                 train_limit=_subset_limit(config), test_limit=config.test_limit)
    rows = []
    for num_factors, temperature in config.grid:
        spec = _spec(config, data, head="het", num_factors=num_factors, temperature=temperature)
        fitted = fit(spec, data, config=_train_config(config, epochs=config.grid_epochs, seed=0))
        scores = fitted.validation
        rows.append(GridRow(num_factors, temperature, scores.top1, scores.nll, scores.ece))
        _log(config, f"grid R={num_factors} tau={temperature}: val nll {scores.nll:.4f}")
    return sorted(rows, key=lambda row: row.val_nll)


def _seed_run(head: str, seed: int, fitted: Fitted) -> SeedRun:
    if fitted.test is None:
        raise ValueError("the demo needs a test set")
    training = fitted.training
    return SeedRun(head, seed, training.best_epoch, training.seconds, fitted.validation,
                   fitted.test, tuple(r.validation.nll for r in training.history))


def noise_sweep(config: DemoConfig, specs: dict[str, ModelSpec]) -> list[SweepPoint]:
    """Both heads trained (seed 0, ``sweep_epochs``) at every sweep rate, clean-test scores."""
    points = []
    for rate in config.sweep_rates:
        data = prepare_fashion_mnist(config.data_dir, noise_rate=rate,
                                     train_limit=_subset_limit(config),
                                     test_limit=config.test_limit)
        for head, spec in specs.items():
            fitted = fit(spec, data, config=_train_config(config, epochs=config.sweep_epochs,
                                                          seed=0))
            assert fitted.test is not None
            points.append(SweepPoint(head, rate, fitted.test.top1, fitted.test.nll))
            _log(config, f"sweep rate {rate} {head}: test top1 {fitted.test.top1:.4f} "
                         f"nll {fitted.test.nll:.4f}")
    return points


def _export(config: DemoConfig, checkpoint: Path, name: str, metrics: dict[str, Any],
            data: PreparedData) -> Path:
    """Export with the configured bank design and S; the card's error figures are measured on
    the first ``config.error_images`` clean test images (held out from training), and its
    decisions are calibrated on the held-out NOISY validation split (``demo_calibration``)."""
    assert data.test_images is not None
    report = export_to_repository(
        checkpoint, config.model_repo, name, mc_samples=config.export_mc_samples,
        top_k=config.top_k, num_confusable=config.num_confusable,
        max_batch_size=config.max_batch_size, metrics=metrics, seed=EXPORT_NOISE_SEED,
        design=config.export_bank_design, error_images=data.test_images[:config.error_images],
    )
    recalibrate_model(report.model_dir, demo_calibration(data, noise_rate=config.noise_rate),
                      version=report.version)
    return config.model_repo / name


def demo_calibration(data: PreparedData, *, noise_rate: float) -> CalibrationSet:
    """The demo's calibration images: the held-out validation split with its NOISY labels,
    what a user has (never trained on; it did choose the epoch kept, by NLL: a mild reuse the
    card's ``source`` states)."""
    return CalibrationSet(
        images=data.val_images.numpy(), labels=data.val_labels.numpy(), label_source="noisy",
        source=f"held-out noisy validation split ({len(data.val_labels)} images, label noise "
               f"rate {noise_rate} in the groups), also used to choose the epoch kept",
    )


def calibrate_demo_models(config: DemoConfig) -> dict[str, Path]:
    """Calibrate the demo models already exported in ``config.model_repo`` on the demo's
    noisy validation split (``demo_calibration``), without training or exporting: the card
    sections are those a full run writes (the same images through the same graphs)."""
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate,
                                 train_limit=config.train_limit, test_limit=config.test_limit)
    held_out = demo_calibration(data, noise_rate=config.noise_rate)
    calibrated = {}
    for name in MODEL_NAMES.values():
        recalibrate_model(config.model_repo / name, held_out)
        calibrated[name] = config.model_repo / name
        _log(config, f"calibrated {calibrated[name]} on {len(held_out.labels)} noisy labels")
    return calibrated


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    return step(), time.perf_counter() - started


def _sizes(data: PreparedData) -> dict[str, int]:
    assert data.test_labels is not None
    return {"train": int(data.train_labels.shape[0]),
            "validation": int(data.val_labels.shape[0]), "test": int(data.test_labels.shape[0])}


def run_demo(config: DemoConfig) -> DemoRun:
    """Run every step of the module docstring: train, compare, rank, export."""
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate,
                                 train_limit=config.train_limit, test_limit=config.test_limit)
    assert data.noise is not None and data.test_labels is not None
    _log(config, f"noise: {data.noise.realised_rate:.3f} of group images flipped")
    grid, grid_seconds = _timed(lambda: select_hyperparameters(config))
    chosen = grid[0]
    specs = {
        "het": _spec(config, data, head="het", num_factors=chosen.num_factors,
                     temperature=chosen.temperature),
        "det": _spec(config, data, head="det", num_factors=0, temperature=1.0),
    }
    runs: list[SeedRun] = []
    seed0: dict[str, Fitted] = {}
    het_correlations = []
    for seed in config.seeds:
        for head, spec in specs.items():
            fitted = fit(spec, data, config=_train_config(config, epochs=config.epochs, seed=seed,
                                                          patience=config.patience))
            runs.append(_seed_run(head, seed, fitted))
            _log(config, f"seed {seed} {head}: test {fitted.test}")
            if head == "het":
                predictions = fitted.test_predictions
                het_correlations.append((predictions.mean_correlation,
                                         predictions.mean_raw_correlation))
            if seed == config.seeds[0]:
                seed0[head] = fitted
    sweep, sweep_seconds = _timed(lambda: noise_sweep(config, specs))
    correlation = rank_correlations(np.mean([c for c, _ in het_correlations], axis=0),
                                    np.mean([r for _, r in het_correlations], axis=0),
                                    data.class_names)
    exported, checkpoints = _save_and_export(config, seed0, data)
    return DemoRun(
        config=config, class_names=data.class_names, sizes=_sizes(data), noise=data.noise,
        grid=grid, grid_seconds=grid_seconds, runs=runs, summary=summarize_runs(runs),
        correlation=correlation, sweep=sweep, sweep_seconds=sweep_seconds,
        test_probs={head: fitted.test_predictions.probs for head, fitted in seed0.items()},
        test_labels=data.test_labels.numpy(), checkpoints=checkpoints, exported=exported,
        seconds=time.perf_counter() - started)


def reevaluate_demo(config: DemoConfig, previous_report: Path) -> DemoRun:
    """Steps 5-6 again from the seed-0 checkpoints in ``config.work_dir``, without training.

    Same code path as ``run_demo`` from the trained models on: ``predict`` on the clean test
    set (same MC noise seed), the correlation ranking and the export (same export noise seed).
    The grid, the per-seed figures and the noise sweep are those of the previous full run, read
    from its ``previous_report`` (``demo_report.json``); the correlation ranking comes from the
    seed-0 model only (the other seeds' models are not kept). The report's last section says
    exactly this.
    """
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    paths = {head: _checkpoint_path(config, head) for head in MODEL_NAMES}
    missing = [str(path) for path in (previous_report, *paths.values()) if not path.is_file()]
    if missing:
        raise InputError(f"re-evaluating needs a previous full demo run: missing {missing}")
    previous = json.loads(previous_report.read_text())
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate,
                                 train_limit=config.train_limit, test_limit=config.test_limit)
    assert data.test_images is not None and data.test_labels is not None
    checkpoints = {head: load_checkpoint(path) for head, path in paths.items()}
    predictions = {head: predict(ckpt.model, data.test_images)
                   for head, ckpt in checkpoints.items()}
    _log(config, "re-scored the seed-0 checkpoints on the clean test set")
    het = predictions["het"]
    exported = {}
    if config.export:
        exported = {head: _export(config, paths[head], name, checkpoints[head].metrics, data)
                    for head, name in MODEL_NAMES.items()}
    grid = previous["grid"]
    sweep = previous["noise_sweep"]
    return DemoRun(
        config=config, class_names=data.class_names,
        sizes={key: previous["data"][key] for key in ("train", "validation", "test")},
        noise=data.noise, grid=[GridRow(**row) for row in grid["rows"]],
        grid_seconds=grid["seconds"],
        runs=[seed_run_from_json(run) for run in previous["runs"]],
        summary=_summary_from_json(previous["summary"]),
        correlation=rank_correlations(het.mean_correlation, het.mean_raw_correlation,
                                      data.class_names),
        sweep=[SweepPoint(**point) for point in sweep["points"]],
        sweep_seconds=sweep["seconds"],
        test_probs={head: p.probs for head, p in predictions.items()},
        test_labels=data.test_labels.numpy(), checkpoints=paths, exported=exported,
        seconds=previous["seconds"],
        reevaluation=Reevaluation(paths, {head: path.stat().st_mtime
                                          for head, path in paths.items()},
                                  time.perf_counter() - started, previous))


def _summary_from_json(summary: dict[str, Any]) -> dict[str, dict[str, MetricSummary]]:
    return {head: {name: MetricSummary(value["mean"], value["std"], tuple(value["values"]))
                   for name, value in metrics.items()}
            for head, metrics in summary.items()}


def _save_and_export(config: DemoConfig, seed0: dict[str, Fitted], data: PreparedData
                     ) -> tuple[dict[str, Path], dict[str, Path]]:
    exported, checkpoints = {}, {}
    for head, fitted in seed0.items():
        metrics = fitted_metrics(fitted)
        checkpoints[head] = save_checkpoint(_checkpoint_path(config, head), fitted.model,
                                            metrics=metrics)
        if config.export:
            exported[head] = _export(config, checkpoints[head], MODEL_NAMES[head], metrics,
                                     data)
    return exported, checkpoints


def _checkpoint_path(config: DemoConfig, head: str) -> Path:
    """Where the seed-0 checkpoint of ``head`` ("het" or "det") lives: ``work_dir/<name>.pt``."""
    return config.work_dir / f"{MODEL_NAMES[head]}.pt"
