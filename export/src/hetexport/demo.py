"""The Fashion-MNIST label-noise demo behind ``make models`` (``hetexport demo``).

Steps, all seeded:

1. Inject correlated, input-dependent label noise (``hetexport.label_noise``, rate 0.3 of the
   group images) into the training split; hold out a noisy validation split (10 %).
2. Choose the HET head's (R, temperature) on the NOISY validation NLL from a small grid, each
   point trained ``grid_epochs`` epochs with seed 0.
3. Train HET (chosen settings) and the deterministic head with every seed; each run keeps the
   epoch with the lowest noisy-validation NLL. Score on the CLEAN test set.
4. A noise sweep (one seed, fewer epochs): clean-test top-1 and NLL of both heads when trained
   at other noise rates.
5. Rank class pairs by the HET model's CENTRED latent correlation (of ``C Sigma C``,
   ``C = I - 1 1^T / K``) averaged over the clean test set (and over seeds), most negative
   first: a softmax head never learns the all-ones part of Sigma (a common shift of all
   logits changes nothing), and in the identifiable part a confused pair is one whose logits
   move in opposite directions, trading probability mass. The within-group pairs should lead.
   The raw-correlation ranking is reported beside it for comparison.
6. Plots, ``demo_report.json`` / ``demo_report.md``, and the seed-0 models exported as
   ``fashion_het`` and ``fashion_det``.

Every exported model's decisions are calibrated on the held-out noisy validation split
(``demo_calibration``); ``calibrate_demo_models`` does only that, for models already exported.

``DemoConfig.reuse_checkpoints`` skips steps 1-4 (no training): it re-scores the seed-0
checkpoints already in ``work_dir`` on the clean test set (the same ``predict`` as step 3),
redoes steps 5-6 from them and keeps the training figures (grid, seeds, sweep) of the previous
full run's ``demo_report.json``; the report says so.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from hetexport.label_noise import (
    AMBIGUITY_POWER,
    DEFAULT_NOISE_RATE,
    FASHION_MNIST_NOISY_GROUPS,
    MAX_FLIP_PROBABILITY,
    SIMILARITY_POWER,
)
from hetexport.layers.heads import DEFAULT_MC_SAMPLES as DEFAULT_EVAL_MC_SAMPLES
from hetexport.layers.noise_bank import FITTED_DESIGN
from hetexport.model import ModelSpec
from hetexport.onnx.export import DEFAULT_NOISE_SEED as EXPORT_NOISE_SEED
from hetexport.onnx.export import (
    DEFAULT_NUM_CONFUSABLE,
    DEFAULT_TOP_K,
    export_to_repository,
)
from hetexport.plots import (
    SweepPoint,
    correlation_matrix_plot,
    noise_sweep_plot,
    reliability_diagram,
)
from hetexport.report import (
    REPORT_JSON,
    MetricSummary,
    PairCorrelation,
    SeedRun,
    comparison_table,
    mean_pair_correlation,
    rank_class_pairs,
    ranking_table,
    summarize_runs,
    within_group_precision,
    write_report,
)
from hetexport.repository import DEFAULT_MAX_BATCH_SIZE
from hetexport.training import TrainConfig
from hetexport.training.evaluation import Predictions, predict
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
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_EPOCHS = 5
DEFAULT_GRID_EPOCHS = 2
DEFAULT_SWEEP_RATES = (0.0, 0.2, 0.4)
DEFAULT_SWEEP_EPOCHS = 2
DEFAULT_GRID: tuple[tuple[int, float], ...] = ((6, 0.5), (6, 1.0), (3, 0.5))
"""(R, temperature) points tried for the HET head: R = 6 is the CIFAR reference setting; in
pilot runs (2 epochs, full data) tau 0.5 beat 1.0 and 1.5 on the noisy validation NLL; R = 3
is the smaller alternative."""
DEFAULT_SUBSET_LIMIT = 20_000
"""The grid and the noise sweep train on the first 20k training images only (time budget on
two shared cores); the main runs use all 60k (54k train + 6k validation)."""
DEFAULT_BATCH_SIZE = 256
DEFAULT_BACKBONE_KWARGS: dict[str, Any] = {"widths": [8, 16], "feature_dim": 128}
DEFAULT_TRAIN_MC_SAMPLES = 100
DEMO_EXPORT_MC_SAMPLES = 128
DEMO_BANK_DESIGN = FITTED_DESIGN
"""The shipped HET model's bank: 128 points fitted to the model's latents (learned
quadrature, ``hetexport.exact.bank_fit``)."""
PLOT_FILES = {
    "reliability": "reliability_diagrams.png",
    "noise_sweep": "noise_sweep.png",
    "correlation": "class_correlation.png",
}


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Everything the demo does, with the defaults ``make models`` uses.

    ``train_limit`` / ``test_limit`` keep only the first N images (tests and quick looks);
    ``work_dir`` holds the checkpoints (git-ignored); ``export`` False skips step 6's export;
    ``reuse_checkpoints`` re-evaluates the checkpoints in ``work_dir`` instead of training
    (module doc).
    """

    model_repo: Path
    report_dir: Path
    data_dir: Path = DEFAULT_FASHION_MNIST_DIR
    work_dir: Path = Path("runs/demo")
    noise_rate: float = DEFAULT_NOISE_RATE
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    epochs: int = DEFAULT_EPOCHS
    grid: tuple[tuple[int, float], ...] = DEFAULT_GRID
    grid_epochs: int = DEFAULT_GRID_EPOCHS
    sweep_rates: tuple[float, ...] = DEFAULT_SWEEP_RATES
    sweep_epochs: int = DEFAULT_SWEEP_EPOCHS
    subset_limit: int | None = DEFAULT_SUBSET_LIMIT
    batch_size: int = DEFAULT_BATCH_SIZE
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE_KWARGS))
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
    reuse_checkpoints: bool = False


class GridRow(NamedTuple):
    """One grid point and its noisy-validation scores."""

    num_factors: int
    temperature: float
    val_top1: float
    val_nll: float
    val_ece: float


class CorrelationRanking(NamedTuple):
    """The HET model's mean latent correlations [K, K] (centred and raw) and the class pairs
    ranked by each: centred most negative first, raw most positive first."""

    centered: np.ndarray
    raw: np.ndarray
    ranking: list[PairCorrelation]
    raw_ranking: list[PairCorrelation]


def rank_correlations(centered: np.ndarray, raw: np.ndarray,
                      class_names: tuple[str, ...]) -> CorrelationRanking:
    groups = FASHION_MNIST_NOISY_GROUPS
    return CorrelationRanking(
        centered, raw,
        rank_class_pairs(centered, class_names, groups, most_negative_first=True),
        rank_class_pairs(raw, class_names, groups))


class DemoResult(NamedTuple):
    """What the demo wrote: the report files, the plots, the exported model directories."""

    report_json: Path
    report_markdown: Path
    plots: dict[str, Path]
    exported: dict[str, Path]
    seconds: float


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


def _train_config(config: DemoConfig, *, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed, batch_size=config.batch_size,
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
    return SeedRun(head, seed, fitted.training.best_epoch, fitted.training.seconds,
                   fitted.validation, fitted.test)


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
    recalibrate_model(report.model_dir, demo_calibration(data, noise_rate=config.noise_rate))
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


def run_demo(config: DemoConfig) -> DemoResult:
    """Run every step of the module docstring and write the report, plots and models
    (with ``config.reuse_checkpoints``: ``reevaluate_demo``)."""
    if config.reuse_checkpoints:
        return reevaluate_demo(config)
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
    het_predictions: list[Predictions] = []
    for seed in config.seeds:
        for head, spec in specs.items():
            fitted = fit(spec, data, config=_train_config(config, epochs=config.epochs, seed=seed))
            runs.append(_seed_run(head, seed, fitted))
            _log(config, f"seed {seed} {head}: test {fitted.test}")
            if head == "het":
                het_predictions.append(fitted.test_predictions)
            if seed == config.seeds[0]:
                seed0[head] = fitted
    sweep, sweep_seconds = _timed(lambda: noise_sweep(config, specs))
    correlation = rank_correlations(
        np.mean([p.mean_correlation for p in het_predictions], axis=0),
        np.mean([p.mean_raw_correlation for p in het_predictions], axis=0), data.class_names)
    test_probs = {head: fitted.test_predictions.probs for head, fitted in seed0.items()}
    plots = _plots(config, data, test_probs, correlation.centered)
    plots["noise_sweep"] = noise_sweep_plot(sweep, config.report_dir / PLOT_FILES["noise_sweep"])
    exported, checkpoints = _save_and_export(config, seed0, data)
    summary = summarize_runs(runs)
    report = _report_dict(config, data, grid, grid_seconds, runs, summary, correlation, sweep,
                          sweep_seconds, plots, checkpoints, exported,
                          time.perf_counter() - started)
    markdown = render_markdown(report, summary, correlation)
    json_path, markdown_path = write_report(report, markdown, config.report_dir)
    return DemoResult(json_path, markdown_path, plots, exported, time.perf_counter() - started)


CORRELATION_PLOT_TITLE = ("centred latent logit correlation corr(C Sigma C), "
                          "C = I - 11^T/K; mean over the clean test set")


def reevaluate_demo(config: DemoConfig) -> DemoResult:
    """Steps 5-6 again from the seed-0 checkpoints in ``config.work_dir``, without training.

    Same code path as ``run_demo`` from the trained models on: ``predict`` on the clean test
    set (same MC noise seed), the correlation ranking, the reliability and correlation plots
    and the export (same export noise seed). The grid, the per-seed figures and the noise sweep
    (and its plot) are those of the previous full run, read from ``demo_report.json`` in
    ``config.report_dir``; the correlation ranking comes from the seed-0 model only (the other
    seeds' models are not kept). The report's last section says exactly this.
    """
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    previous_path = config.report_dir / REPORT_JSON
    paths = {head: _checkpoint_path(config, head) for head in MODEL_NAMES}
    missing = [str(path) for path in (previous_path, *paths.values()) if not path.is_file()]
    if missing:
        raise InputError(f"--reuse-checkpoints needs a previous full demo run: missing {missing}")
    previous = json.loads(previous_path.read_text())
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate,
                                 train_limit=config.train_limit, test_limit=config.test_limit)
    assert data.test_images is not None
    checkpoints = {head: load_checkpoint(path) for head, path in paths.items()}
    predictions = {head: predict(ckpt.model, data.test_images)
                   for head, ckpt in checkpoints.items()}
    _log(config, "re-scored the seed-0 checkpoints on the clean test set")
    het = predictions["het"]
    correlation = rank_correlations(het.mean_correlation, het.mean_raw_correlation,
                                    data.class_names)
    plots = _plots(config, data, {head: p.probs for head, p in predictions.items()},
                   correlation.centered)
    plots["noise_sweep"] = config.report_dir / PLOT_FILES["noise_sweep"]
    exported = {}
    if config.export:
        exported = {head: _export(config, paths[head], name, checkpoints[head].metrics, data)
                    for head, name in MODEL_NAMES.items()}
    report = dict(previous)
    report.update({
        "correlation": _correlation_summary(correlation, data.class_names),
        "plots": {key: path.name for key, path in plots.items()},
        "exported": exported,
        "reevaluation": {"what": _reevaluation_text(config, paths, exported),
                         "seconds": time.perf_counter() - started},
    })
    typed = {**report,
             "grid": {**previous["grid"],
                      "rows": [GridRow(**row) for row in previous["grid"]["rows"]]},
             "noise_sweep": {**previous["noise_sweep"], "points": [
                 SweepPoint(**point) for point in previous["noise_sweep"]["points"]]}}
    markdown = render_markdown(typed, _summary_from_json(previous["summary"]), correlation)
    json_path, markdown_path = write_report(report, markdown, config.report_dir)
    return DemoResult(json_path, markdown_path, plots, exported, time.perf_counter() - started)


def _reevaluation_text(config: DemoConfig, checkpoints: dict[str, Path],
                       exported: dict[str, Path]) -> str:
    stamps = ", ".join(f"`{path}` (written {_utc(path.stat().st_mtime)})"
                       for path in checkpoints.values())
    export_line = (
        f"Re-exported {', '.join(f'`{path}`' for path in exported.values())} from those "
        f"checkpoints ({config.export_mc_samples} MC samples of the {config.export_bank_design} "
        f"bank, export noise seed "
        f"{EXPORT_NOISE_SEED}, top-k {config.top_k}, {config.num_confusable} confusable)."
        if exported else "Nothing exported.")
    return (
        "`hetexport demo --reuse-checkpoints` re-ran, WITHOUT training: the clean-test "
        f"predictions of the seed-0 checkpoints {stamps}; from them the class-pair ranking "
        "(centred and raw correlation) and the reliability and correlation plots. "
        f"{export_line} NOT re-run, copied from the previous full run's `{REPORT_JSON}`: the "
        "setup, the hyperparameter grid, the per-seed clean-test figures, the noise sweep and "
        "its plot, and the run time quoted at the top. The ranking above is therefore of the "
        "seed-0 HET model alone, where a full run averages over the seeds.")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _summary_from_json(summary: dict[str, Any]) -> dict[str, dict[str, MetricSummary]]:
    return {head: {name: MetricSummary(value["mean"], value["std"], tuple(value["values"]))
                   for name, value in metrics.items()}
            for head, metrics in summary.items()}


def _plots(config: DemoConfig, data: PreparedData, test_probs: dict[str, np.ndarray],
           mean_centered_correlation: np.ndarray) -> dict[str, Path]:
    """The reliability diagrams (seed-0 test probabilities per head) and the centred
    correlation heatmap; the noise-sweep plot is drawn where the sweep runs."""
    labels = data.test_labels.numpy()
    directory = config.report_dir
    return {
        "reliability": reliability_diagram(
            {"HET": test_probs["het"], "deterministic": test_probs["det"]},
            labels, directory / PLOT_FILES["reliability"]),
        "correlation": correlation_matrix_plot(
            mean_centered_correlation, data.class_names, FASHION_MNIST_NOISY_GROUPS,
            directory / PLOT_FILES["correlation"], title=CORRELATION_PLOT_TITLE),
    }


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


def _report_dict(config: DemoConfig, data: PreparedData, grid: list[GridRow],
                 grid_seconds: float, runs: list[SeedRun], summary: dict[str, Any],
                 correlation: CorrelationRanking, sweep: list[SweepPoint], sweep_seconds: float,
                 plots: dict[str, Path],
                 checkpoints: dict[str, Path], exported: dict[str, Path],
                 seconds: float) -> dict[str, Any]:
    settings = asdict(config)
    het, det = summary["het"], summary["det"]
    noise = data.noise
    return {
        "settings": settings,
        "machine": {"platform": platform.platform(), "torch_threads": config.num_threads},
        "data": {
            "train": int(data.train_labels.shape[0]), "validation": int(data.val_labels.shape[0]),
            "test": int(data.test_labels.shape[0]), "class_names": list(data.class_names),
        },
        "label_noise": {
            "rate": config.noise_rate, "realised_rate": noise.realised_rate,
            "groups": [list(group) for group in FASHION_MNIST_NOISY_GROUPS],
            "ambiguity_power": AMBIGUITY_POWER, "similarity_power": SIMILARITY_POWER,
            "max_flip_probability": MAX_FLIP_PROBABILITY,
            "transition_counts": noise.transition_counts.tolist(),
        },
        "grid": {"rows": grid, "epochs": config.grid_epochs, "seconds": grid_seconds,
                 "chosen": {"num_factors": grid[0].num_factors,
                            "temperature": grid[0].temperature}},
        "runs": runs,
        "summary": summary,
        "het_minus_det": {name: het[name].mean - det[name].mean for name in het},
        "targets": {"het_nll_below_det": het["nll"].mean < det["nll"].mean,
                    "het_top1_not_lower": het["top1"].mean >= det["top1"].mean},
        "correlation": _correlation_summary(correlation, data.class_names),
        "noise_sweep": {"points": sweep, "epochs": config.sweep_epochs, "seeds": [0],
                        "seconds": sweep_seconds},
        "plots": {key: path.name for key, path in plots.items()},
        "checkpoints": checkpoints,
        "exported": exported,
        "seconds": seconds,
    }


def _correlation_summary(correlation: CorrelationRanking,
                         class_names: tuple[str, ...]) -> dict[str, Any]:
    """``ranking`` etc. are of the centred correlation (most negative first); ``raw_*`` of the
    raw correlation (most positive first), for comparison."""
    ranking, raw_ranking = correlation.ranking, correlation.raw_ranking
    by_magnitude = rank_class_pairs(correlation.centered, class_names,
                                    FASHION_MNIST_NOISY_GROUPS, by_magnitude=True)
    return {
        "definition": "corr(C Sigma C), C = I - 11^T/K; pairs ranked most negative first",
        "mean_over_test_and_seeds": correlation.centered,
        "ranking": ranking,
        "within_group_precision": within_group_precision(ranking),
        "within_group_precision_by_magnitude": within_group_precision(by_magnitude),
        "mean_within_group": mean_pair_correlation(ranking, within=True),
        "mean_other_pairs": mean_pair_correlation(ranking, within=False),
        "raw_mean_over_test_and_seeds": correlation.raw,
        "raw_ranking": raw_ranking,
        "raw_within_group_precision": within_group_precision(raw_ranking),
    }


def render_markdown(report: dict[str, Any], summary: dict[str, Any],
                    correlation: CorrelationRanking) -> str:
    """The human-readable report (the README quotes it)."""
    settings, noise, grid = report["settings"], report["label_noise"], report["grid"]
    diff, targets = report["het_minus_det"], report["targets"]
    ranking, figures = correlation.ranking, report["correlation"]
    within = sum(pair.within_noisy_group for pair in ranking)
    raw_top = sum(pair.within_noisy_group for pair in correlation.raw_ranking[:within])
    grid_lines = ["| R | tau | val top-1 (%) | val NLL | val ECE |", "|---|---|---|---|---|"]
    grid_lines += [f"| {row.num_factors} | {row.temperature} | {100 * row.val_top1:.2f} | "
                   f"{row.val_nll:.4f} | {row.val_ece:.4f} |" for row in grid["rows"]]
    sweep_lines = ["| noise rate | head | top-1 (%) | NLL |", "|---|---|---|---|"]
    sweep_lines += [f"| {p.noise_rate} | {p.head} | {100 * p.top1:.2f} | {p.nll:.4f} |"
                    for p in report["noise_sweep"]["points"]]
    verdict_nll = "met" if targets["het_nll_below_det"] else "MISSED"
    verdict_top1 = "met" if targets["het_top1_not_lower"] else "MISSED"
    return "\n".join([
        "# Fashion-MNIST label-noise demo: HET vs deterministic",
        "",
        f"Generated by `hetexport demo` in {report['seconds'] / 60:.1f} min "
        f"({settings['num_threads']} torch threads).",
        "",
        "## Setup",
        f"- Training labels: {report['data']['train']} noisy training images, "
        f"{report['data']['validation']} held out as a noisy validation split (every choice is "
        f"made there); {report['data']['test']} clean test images for the figures below.",
        f"- Injected noise: rate {noise['rate']} of the images in the groups "
        "{T-shirt/top, Pullover, Coat, Shirt} and {Sandal, Sneaker, Ankle boot} "
        f"(realised {noise['realised_rate']:.3f}); flip probability grows with the image's "
        "ambiguity (distance to its own class mean vs. the nearest other group mean, power "
        f"{noise['ambiguity_power']}, capped at {noise['max_flip_probability']}); the new label "
        "is chosen among the group by similarity. See `hetexport.label_noise`.",
        f"- Model: SmallCNN {settings['backbone_kwargs']} + HET softmax head or plain softmax "
        f"head; AdamW (batch {settings['batch_size']}), cosine decay, {settings['epochs']} "
        "epochs, best epoch by noisy-validation "
        f"NLL; HET trains with {settings['train_mc_samples']} MC samples and is evaluated "
        f"with {settings.get('eval_mc_samples', settings['export_mc_samples'])} fresh ones.",
        f"- Seeds: {list(settings['seeds'])}.",
        "",
        "## HET hyperparameters chosen on the noisy validation split",
        f"Grid trained {grid['epochs']} epoch(s) each on the first {settings['subset_limit']} "
        "training images (noisy validation split: 10 % of them), seed 0; chosen: R = "
        f"{grid['chosen']['num_factors']}, tau = {grid['chosen']['temperature']}.",
        "",
        *grid_lines,
        "",
        "## Clean test set, trained on noisy labels (mean ± std over seeds)",
        "",
        comparison_table(summary),
        "",
        f"HET minus deterministic: top-1 {100 * diff['top1']:+.2f} points, NLL "
        f"{diff['nll']:+.4f}, ECE {diff['ece']:+.4f}. Target 'HET NLL below det': "
        f"{verdict_nll}; target 'HET top-1 not lower': {verdict_top1}.",
        "",
        f"![reliability diagrams]({PLOT_FILES['reliability']})",
        "",
        "## Class pairs ranked by the learned centred latent correlation (HET, mean over the "
        f"clean test set and {_correlation_source(report)})",
        "",
        "A softmax is unchanged when every logit moves by the same amount, so the training "
        "loss never sees the all-ones direction of the latent covariance Sigma and the raw "
        "correlation Sigma_ij / sqrt(Sigma_ii Sigma_jj) carries an arbitrary common part. The "
        "identifiable part is the centred covariance C Sigma C (C = I - 11^T/K); its rows sum "
        "to 0. A pair the noise confuses is one whose centred logits move in OPPOSITE "
        "directions (probability mass moves between the two classes), so pairs are ranked "
        "most negative first. The served models use the same definition (`confusable` = most "
        "negative centred correlation). The column 'raw correlation' is the raw correlation "
        "of the same pair.",
        "",
        ranking_table(ranking, rows=max(within + 3, 10), heading="centred correlation",
                      compare=correlation.raw),
        "",
        f"Within-group pairs among the top {within}: "
        f"{100 * figures['within_group_precision']:.0f} % by centred correlation (most "
        f"negative first), {100 * figures['within_group_precision_by_magnitude']:.0f} % by "
        f"|centred correlation|; chance: {100 * within / len(ranking):.0f} %. "
        f"Mean centred correlation of the {within} within-group pairs: "
        f"{figures['mean_within_group']:+.3f}; of the other pairs: "
        f"{figures['mean_other_pairs']:+.3f}.",
        "",
        f"For comparison, ranked by the RAW correlation (most positive first) {raw_top} of "
        f"the top {within} pairs are within a group:",
        "",
        ranking_table(correlation.raw_ranking, rows=within, heading="raw correlation",
                      compare=correlation.centered, compare_heading="centred correlation"),
        "",
        f"![class correlation]({PLOT_FILES['correlation']})",
        "",
        "## Across noise levels",
        f"One seed, {report['noise_sweep']['epochs']} epoch(s) each on the first "
        f"{settings['subset_limit']} training images (less than the main runs).",
        "",
        *sweep_lines,
        "",
        f"![noise sweep]({PLOT_FILES['noise_sweep']})",
        "",
        *_reevaluation_note(report),
    ])


def _correlation_source(report: dict[str, Any]) -> str:
    if "reevaluation" in report:
        return "the seed-0 model only, re-evaluated: see the last section"
    return "the seeds"


def _reevaluation_note(report: dict[str, Any]) -> list[str]:
    note = report.get("reevaluation")
    if note is None:
        return []
    return ["## What this report re-ran", "", note["what"], ""]

