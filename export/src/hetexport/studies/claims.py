"""The paper's claims with confidence intervals (``make claims``, ``hetexport claims``).

What it measures, on Fashion-MNIST with the demo's correlated, input-dependent label noise
(``hetexport.label_noise``), every figure on the CLEAN test set:

1. HET vs deterministic at the demo's noise rate, ``seeds`` seeds, PAIRED by seed: at seed s
   both heads see the same injected noise (noise seed s), the same validation split, the same
   minibatch order and the same backbone initialisation (``fit`` seeds both with s). For top-1,
   NLL and ECE: the mean of the per-seed differences HET - det with a 95 % paired t-interval
   (``hetexport.statistics``).
2. The same at every rate of ``sweep_rates`` with ``sweep_seeds``, plotted as the HET
   advantage (positive = HET better) with its intervals against the noise rate. Runs at the
   main rate with a seed of both lists are trained once and used for both.
3. The per-input confusable precision (``hetexport.studies.confusable_precision``) of each HET model
   at the main rate, for the first confusable class of the top-1 under three definitions:
   ``probability_share`` (the served definition, ``max(0, -C_ij) / sum_l max(0, -C_il)``
   with ``C = Cov_s(p)`` of the sampled probabilities), ``latent_correlation`` (the previous
   definition: most negative centred latent correlation) and ``runner_up`` (the second class
   of p_bar, no noise model); plus the deterministic model's runner-up. Per seed and pooled,
   with Wilson intervals. The samples come from one fixed noise bank (``claims_noise_bank``).
4. Hyperparameters: R and tau are the demo's choice on the NOISY validation split (read from
   its ``demo_report.json``), never tuned here; each run keeps its epoch with the lowest
   noisy-validation NLL (``fit``). The clean test set is never used to choose anything.

Typical usage::

    result = run_claims(ClaimsConfig(report_dir=Path("reports")))
    result.report_markdown                         # reports/claims.md
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from hetexport.class_correlation import (
    SOFTMAX_RULE,
    confusable_from_shares,
    latent_confusable_ids,
    probability_shares,
)
from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.errors import InputError
from hetexport.label_noise import DEFAULT_NOISE_RATE, FASHION_MNIST_NOISY_GROUPS
from hetexport.layers import NoiseBank
from hetexport.layers.heads import DEFAULT_MC_SAMPLES
from hetexport.metrics import Metrics
from hetexport.model import HetClassifier, ModelSpec
from hetexport.onnx.export import DEFAULT_NOISE_SEED as EXPORT_NOISE_SEED
from hetexport.statistics import (
    PAIRED_METHOD,
    WILSON_METHOD,
    PairedDifference,
    Proportion,
    paired_difference,
    wilson_interval,
)
from hetexport.studies.confusable_precision import (
    chance_precision,
    group_confusable_precision,
    runner_up_ids,
)
from hetexport.studies.demo import (
    DEFAULT_BACKBONE_KWARGS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_TRAIN_MC_SAMPLES,
)
from hetexport.studies.plots import advantage_plot, precision_plot
from hetexport.studies.report import (
    METRIC_NAMES,
    SeedRun,
    summarize_runs,
    to_jsonable,
    write_report,
)
from hetexport.training import TrainConfig
from hetexport.training.config import DEFAULT_EVAL_BATCH_SIZE
from hetexport.training.experiment import PreparedData, fit, prepare_fashion_mnist

CLAIMS_JSON = "claims.json"
CLAIMS_MARKDOWN = "claims.md"
PLOT_FILES = {"advantage": "claims_advantage.png",
              "precision": "claims_confusable_precision.png"}
RUNS_FILE = "claims_runs.json"
"""Finished pairs, kept in ``work_dir`` so that an interrupted run resumes (same settings)."""
DEFAULT_SEEDS = 5
DEFAULT_SWEEP_RATES = (0.0, 0.15, 0.3, 0.45)
DEFAULT_SWEEP_SEEDS = 3
DEFAULT_EPOCHS = 4
"""One fewer than the demo's main runs (time budget)."""
DEFAULT_TRAIN_LIMIT = 20_000
"""First 20k training images (18k train + 2k noisy validation), as the demo's grid and sweep
(its main runs use all 60k): the whole run (14 pairs) must fit ~40 min on two cores shared
with other jobs."""
DEFAULT_METRIC_MC_SAMPLES = 250
"""MC samples behind the HET head's p_bar for the validation and test METRICS (the served
models use 1000; fewer samples can only make HET's NLL slightly worse: E[log p_hat] <=
log p). The confusable classes use ``bank_samples``."""
DEFAULT_NUM_THREADS = 1
DEFAULT_WORKERS = 2
"""Two processes of one torch thread each: on two cores shared with other jobs, one thread per
process trained ~3-4x faster than two threads in one process (measured, contended machine)."""
DEFINITIONS = ("probability_share", "latent_correlation", "runner_up")
"""The HET model's first confusable class of the top-1, by definition (module doc, item 3)."""
DET_RUNNER_UP = "det_runner_up"
DEFINITION_LABELS = {
    "probability_share": "HET, probability share -Cov(p_i,p_j)/Var(p_i) (new, served)",
    "latent_correlation": "HET, most negative centred latent correlation (old)",
    "runner_up": "HET, runner-up class of p_bar (no noise model)",
    DET_RUNNER_UP: "deterministic, runner-up class of p",
}
ADVANTAGE_SIGN = {"top1": 1.0, "nll": -1.0, "ece": -1.0}
"""HET advantage = sign * (HET - det): positive means HET is better for every metric."""


@dataclass(frozen=True, kw_only=True)
class ClaimsConfig:
    """Everything ``run_claims`` does; the defaults are what ``make claims`` runs.

    ``num_factors`` / ``temperature`` None: the demo's choice from ``demo_report``.
    ``train_limit`` / ``test_limit`` keep the first N images; ``work_dir`` holds
    ``RUNS_FILE`` (git-ignored) so that a run interrupted after some pairs resumes;
    ``train_missing`` False trains nothing and reports the stored pairs only (the report lists
    the missing ones).
    """

    report_dir: Path = Path("reports")
    data_dir: Path = DEFAULT_FASHION_MNIST_DIR
    work_dir: Path = Path("runs/claims")
    demo_report: Path = Path("reports/demo_report.json")
    noise_rate: float = DEFAULT_NOISE_RATE
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    sweep_rates: tuple[float, ...] = DEFAULT_SWEEP_RATES
    sweep_seeds: tuple[int, ...] = tuple(range(DEFAULT_SWEEP_SEEDS))
    epochs: int = DEFAULT_EPOCHS
    train_limit: int | None = DEFAULT_TRAIN_LIMIT
    test_limit: int | None = None
    num_factors: int | None = None
    temperature: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE_KWARGS))
    train_mc_samples: int = DEFAULT_TRAIN_MC_SAMPLES
    eval_mc_samples: int = DEFAULT_METRIC_MC_SAMPLES
    bank_samples: int = DEFAULT_MC_SAMPLES
    bank_seed: int = EXPORT_NOISE_SEED
    num_confusable: int = 1
    num_threads: int = DEFAULT_NUM_THREADS
    workers: int = DEFAULT_WORKERS
    progress: bool = True
    resume: bool = True
    train_missing: bool = True


class Hyperparameters(NamedTuple):
    """R and tau of the HET head, where they come from, and the grid that chose them."""

    num_factors: int
    temperature: float
    source: str
    grid: list[dict[str, Any]]
    grid_epochs: int | None
    grid_train_limit: int | None


class PairedRun(NamedTuple):
    """Both heads trained at one (noise rate, seed) on ``sizes`` images (train, validation,
    test); ``precision`` (main rate only): per
    definition, [successes, qualifying] of the confusable precision on the clean test set."""

    noise_rate: float
    seed: int
    realised_noise_rate: float
    sizes: dict[str, int]
    het: SeedRun
    det: SeedRun
    precision: dict[str, list[int]] | None
    chance: float | None


class ClaimsResult(NamedTuple):
    report_json: Path
    report_markdown: Path
    plots: dict[str, Path]
    seconds: float


def _log(message: str) -> None:
    """One line per finished step, whatever ``progress`` says (the bars are per epoch)."""
    tqdm.write(f"[claims] {message}")


def choose_hyperparameters(config: ClaimsConfig) -> Hyperparameters:
    """R and tau: both given in ``config``, or the demo's choice on the noisy validation split
    (``grid.chosen`` of its report)."""
    if config.num_factors is not None and config.temperature is not None:
        return Hyperparameters(config.num_factors, config.temperature, "given as options", [],
                               None, None)
    if not config.demo_report.is_file():
        raise InputError(f"no demo report at {config.demo_report}: run `make models` first, or "
                         "give --num-factors and --temperature")
    demo = json.loads(config.demo_report.read_text())
    grid, chosen = demo["grid"], demo["grid"]["chosen"]
    return Hyperparameters(
        config.num_factors if config.num_factors is not None else int(chosen["num_factors"]),
        config.temperature if config.temperature is not None else float(chosen["temperature"]),
        f"the demo's choice on the noisy validation split ({config.demo_report})",
        list(grid["rows"]), int(grid["epochs"]), demo["settings"].get("subset_limit"))


def claims_noise_bank(num_factors: int, num_classes: int, config: ClaimsConfig) -> NoiseBank:
    """The one noise bank behind the confusable classes measured here: ``bank_samples``
    shared samples from ``bank_seed`` (the export's seed and size by default)."""
    return NoiseBank.fixed(config.bank_samples, num_factors, num_classes,
                           seed=config.bank_seed)


class FirstConfusable(NamedTuple):
    """Per test image [N]: the HET top-1 (of the bank's p_bar) and, per definition, the first
    confusable class of that top-1."""

    top1: np.ndarray
    first: dict[str, np.ndarray]


@torch.no_grad()
def first_confusable_ids(model: HetClassifier, images: torch.Tensor, bank: NoiseBank, *,
                         batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> FirstConfusable:
    """The first confusable class of each image's top-1 by every ``DEFINITIONS`` entry, from one
    forward pass with ``bank`` (the samples that give p_bar also give the shares)."""
    top1, first = [], {name: [] for name in DEFINITIONS}
    for start in range(0, images.shape[0], batch_size):
        output = model.predict(images[start : start + batch_size], noise=bank)
        if output.sample_probs is None:
            raise ValueError("the head returned no sample_probs")
        ids = output.probs.argmax(-1, keepdim=True)  # [B, 1]
        shares = probability_shares(output.sample_probs, ids, rule=SOFTMAX_RULE)
        share_ids, _ = confusable_from_shares(shares, ids, 1)
        latent_ids = latent_confusable_ids(output.latent, ids, num_confusable=1,
                                           rule=SOFTMAX_RULE)
        top1.append(ids[:, 0].numpy())
        first["probability_share"].append(share_ids[:, 0, 0].numpy())
        first["latent_correlation"].append(latent_ids[:, 0, 0].numpy())
        first["runner_up"].append(runner_up_ids(output.probs.numpy()))
    return FirstConfusable(np.concatenate(top1),
                           {name: np.concatenate(parts) for name, parts in first.items()})


def _specs(config: ClaimsConfig, data: PreparedData, chosen: Hyperparameters
           ) -> dict[str, ModelSpec]:
    common = {"num_classes": len(data.class_names),
              "backbone_kwargs": dict(config.backbone_kwargs),
              "train_mc_samples": config.train_mc_samples,
              "eval_mc_samples": config.eval_mc_samples,
              "labels": data.class_names, "input": data.input_spec}
    return {"het": ModelSpec(head="het", num_factors=chosen.num_factors,
                             temperature=chosen.temperature, **common),
            "det": ModelSpec(head="det", num_factors=0, temperature=1.0, **common)}


def _precision_counts(config: ClaimsConfig, data: PreparedData, het: HetClassifier,
                      det_probs: np.ndarray, chosen: Hyperparameters
                      ) -> tuple[dict[str, list[int]], float]:
    labels = data.test_labels.numpy()
    classes = len(data.class_names)
    groups = FASHION_MNIST_NOISY_GROUPS
    found = first_confusable_ids(het, data.test_images,
                                 claims_noise_bank(chosen.num_factors, classes, config))
    counts = {}
    for name, first in found.first.items():
        result = group_confusable_precision(labels, found.top1, first, groups,
                                            num_classes=classes)
        counts[name] = [result.successes, result.total]
    det_top1 = det_probs.argmax(1)
    result = group_confusable_precision(labels, det_top1, runner_up_ids(det_probs), groups,
                                        num_classes=classes)
    counts[DET_RUNNER_UP] = [result.successes, result.total]
    return counts, chance_precision(labels, found.top1, groups, num_classes=classes)


def train_pair(config: ClaimsConfig, chosen: Hyperparameters, noise_rate: float, seed: int
               ) -> PairedRun:
    """Both heads at (noise rate, seed), paired (module doc); at the main rate also the
    confusable precision counts of this seed."""
    data = prepare_fashion_mnist(config.data_dir, noise_rate=noise_rate, noise_seed=seed,
                                 train_limit=config.train_limit, test_limit=config.test_limit)
    assert data.noise is not None and data.test_labels is not None
    runs, fitted = {}, {}
    for head, spec in _specs(config, data, chosen).items():
        train_config = TrainConfig(epochs=config.epochs, seed=seed, batch_size=config.batch_size,
                                   num_threads=config.num_threads, progress=config.progress)
        fitted[head] = fit(spec, data, config=train_config)
        result = fitted[head]
        assert result.test is not None
        runs[head] = SeedRun(head, seed, result.training.best_epoch, result.training.seconds,
                             result.validation, result.test)
        _log(f"rate {noise_rate} seed {seed} {head}: test {result.test}")
    precision = chance = None
    torch.set_num_threads(config.num_threads)
    if _needs_precision(config, noise_rate, seed):
        precision, chance = _precision_counts(config, data, fitted["het"].model,
                                              fitted["det"].test_predictions.probs, chosen)
        _log(f"seed {seed} confusable precision counts: {precision}")
    sizes = {"train": int(data.train_labels.shape[0]),
             "validation": int(data.val_labels.shape[0]), "test": int(data.test_labels.shape[0])}
    return PairedRun(noise_rate, seed, data.noise.realised_rate, sizes, runs["het"], runs["det"],
                     precision, chance)


def planned_pairs(config: ClaimsConfig) -> list[tuple[float, int]]:
    """Every (noise rate, seed) to train, each once: the main rate first, then the sweep
    seed by seed (any finished prefix covers every rate with as many seeds as possible)."""
    pairs = [(config.noise_rate, seed) for seed in config.seeds]
    pairs += [(rate, seed) for seed in config.sweep_seeds for rate in config.sweep_rates
              if (rate, seed) not in pairs]
    return pairs


def _fingerprint(config: ClaimsConfig, chosen: Hyperparameters) -> dict[str, Any]:
    """The settings a stored pair must match to be reused."""
    settings = asdict(config)
    for key in ("report_dir", "work_dir", "demo_report", "seeds", "sweep_rates", "sweep_seeds",
                "progress", "resume", "train_missing", "num_threads", "workers"):
        settings.pop(key)
    settings.update(num_factors=chosen.num_factors, temperature=chosen.temperature)
    return json.loads(json.dumps(to_jsonable(settings)))


def _run_from_json(data: dict[str, Any]) -> PairedRun:
    def seed_run(run: dict[str, Any]) -> SeedRun:
        return SeedRun(run["head"], run["seed"], run["best_epoch"], run["seconds"],
                       Metrics(**run["validation"]), Metrics(**run["test"]))

    return PairedRun(data["noise_rate"], data["seed"], data["realised_noise_rate"], data["sizes"],
                     seed_run(data["het"]), seed_run(data["det"]), data["precision"],
                     data["chance"])


def _stored_runs(config: ClaimsConfig, fingerprint: dict[str, Any]) -> list[PairedRun]:
    path = config.work_dir / RUNS_FILE
    if not config.resume or not path.is_file():
        return []
    stored = json.loads(path.read_text())
    if stored.get("settings") != fingerprint:
        return []
    return [_run_from_json(run) for run in stored["pairs"]]


def _store_runs(config: ClaimsConfig, fingerprint: dict[str, Any], runs: list[PairedRun]) -> None:
    config.work_dir.mkdir(parents=True, exist_ok=True)
    payload = {"settings": fingerprint, "pairs": runs}
    (config.work_dir / RUNS_FILE).write_text(json.dumps(to_jsonable(payload), indent=1))


def train_all(config: ClaimsConfig, chosen: Hyperparameters) -> list[PairedRun]:
    """``planned_pairs`` on ``config.workers`` processes, reusing the pairs stored by an
    interrupted run with the same settings (``RUNS_FILE``); each finished pair is stored at
    once. Results are in ``planned_pairs`` order, whatever the order they finish in."""
    fingerprint = _fingerprint(config, chosen)
    stored = {(run.noise_rate, run.seed): run for run in _stored_runs(config, fingerprint)}
    todo = []
    for rate, seed in planned_pairs(config):
        run = stored.get((rate, seed))
        if run is None or (_needs_precision(config, rate, seed) and run.precision is None):
            todo.append((rate, seed))
        else:
            _log(f"rate {rate} seed {seed}: reused from {config.work_dir / RUNS_FILE}")
    if not config.train_missing:
        _log(f"not training {todo}: reporting the stored pairs only")
        todo = []
    for run in _train_pairs(config, chosen, todo):
        stored[(run.noise_rate, run.seed)] = run
        _store_runs(config, fingerprint, list(stored.values()))
    return [stored[pair] for pair in planned_pairs(config) if pair in stored]


def _needs_precision(config: ClaimsConfig, rate: float, seed: int) -> bool:
    return rate == config.noise_rate and seed in config.seeds


def _train_pairs(config: ClaimsConfig, chosen: Hyperparameters,
                 pairs: list[tuple[float, int]]) -> Iterator[PairedRun]:
    """``train_pair`` for every pair, yielded as they finish (in this process when
    ``workers`` is 1, else in a pool of spawned processes)."""
    if config.workers == 1 or len(pairs) < 2:
        for rate, seed in pairs:
            yield train_pair(config, chosen, rate, seed)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
        futures = [pool.submit(train_pair, config, chosen, rate, seed) for rate, seed in pairs]
        for future in as_completed(futures):
            yield future.result()


def _select(runs: list[PairedRun], rate: float, seeds: tuple[int, ...]) -> list[PairedRun]:
    """The runs at ``rate`` with one of ``seeds`` (fewer when some were not trained)."""
    chosen = {run.seed: run for run in runs if run.noise_rate == rate}
    return [chosen[seed] for seed in seeds if seed in chosen]


def paired_differences(runs: list[PairedRun]) -> dict[str, PairedDifference]:
    """Per metric, HET - det over the seeds of ``runs`` with its 95 % paired t-interval."""
    return {name: paired_difference([getattr(run.het.test, name) for run in runs],
                                    [getattr(run.det.test, name) for run in runs])
            for name in METRIC_NAMES}


def precision_table(runs: list[PairedRun]) -> dict[str, dict[str, Any]]:
    """Per definition: the per-seed proportions and the pooled one (Wilson intervals)."""
    table = {}
    for name in (*DEFINITIONS, DET_RUNNER_UP):
        per_seed = {run.seed: wilson_interval(*run.precision[name]) for run in runs}
        successes = sum(run.precision[name][0] for run in runs)
        total = sum(run.precision[name][1] for run in runs)
        table[name] = {"label": DEFINITION_LABELS[name], "per_seed": per_seed,
                       "pooled": wilson_interval(successes, total)}
    return table


def _targets(main: dict[str, PairedDifference]) -> dict[str, bool]:
    return {"nll_improvement_interval_excludes_0": main["nll"].high < 0,
            "top1_interval_not_below_0": main["top1"].high >= 0}


def run_claims(config: ClaimsConfig) -> ClaimsResult:
    """Items 1-4 of the module doc: train, compare, count, plot and write the report."""
    started = time.perf_counter()
    torch.set_num_threads(config.num_threads)
    chosen = choose_hyperparameters(config)
    _log(f"R = {chosen.num_factors}, tau = {chosen.temperature} ({chosen.source})")
    runs = train_all(config, chosen)
    main_runs = _select(runs, config.noise_rate, config.seeds)
    if len(main_runs) < 2:
        raise InputError(f"{len(main_runs)} pair(s) at the main rate: need 2 for an interval")
    main = paired_differences(main_runs)
    by_rate = {rate: _select(runs, rate, config.sweep_seeds) for rate in config.sweep_rates}
    sweep = {rate: paired_differences(chosen_runs) for rate, chosen_runs in by_rate.items()
             if len(chosen_runs) >= 2}
    missing = [pair for pair in planned_pairs(config)
               if pair not in {(run.noise_rate, run.seed) for run in runs}]
    precision = precision_table(main_runs)
    directory = config.report_dir
    plots = {
        "advantage": advantage_plot(sweep, ADVANTAGE_SIGN, directory / PLOT_FILES["advantage"],
                                    main_rate=config.noise_rate),
        "precision": precision_plot({DEFINITION_LABELS[name]: row["pooled"]
                                     for name, row in precision.items()},
                                    directory / PLOT_FILES["precision"],
                                    chance=_pooled_chance(main_runs)),
    }
    report = {
        "settings": asdict(config),
        "hyperparameters": chosen,
        "methods": {"differences": PAIRED_METHOD, "proportions": WILSON_METHOD,
                    "confidence": 0.95, "sign": "differences are HET - det; lower NLL and ECE "
                    "and higher top-1 are better"},
        "data": main_runs[0].sizes,
        "missing_pairs": missing,
        "main": {"noise_rate": config.noise_rate, "seeds": [run.seed for run in main_runs],
                 "realised_noise_rates": [run.realised_noise_rate for run in main_runs],
                 "summary": summarize_runs([r for run in main_runs for r in (run.het, run.det)]),
                 "het_minus_det": main, "targets": _targets(main)},
        "sweep": {str(rate): diff for rate, diff in sweep.items()},
        "confusable_precision": {"groups": FASHION_MNIST_NOISY_GROUPS, "table": precision,
                                 "chance": _pooled_chance(main_runs),
                                 "noise_bank": {"samples": config.bank_samples,
                                                "seed": config.bank_seed}},
        "demo_runs": demo_differences(config.demo_report),
        "runs": runs,
        "plots": {key: path.name for key, path in plots.items()},
        "training_seconds": sum(run.het.seconds + run.det.seconds for run in runs),
        "seconds": time.perf_counter() - started,
    }
    json_path, markdown_path = write_report(report, render_markdown(report), directory,
                                            json_name=CLAIMS_JSON,
                                            markdown_name=CLAIMS_MARKDOWN)
    return ClaimsResult(json_path, markdown_path, plots, time.perf_counter() - started)


def demo_differences(path: Path) -> dict[str, Any] | None:
    """The demo's own runs (``make models``: more data and epochs than here) with the same
    paired statistics: there, at seed s both heads share the injected noise (one draw, noise
    seed 0, for every seed), the data order and the initialisation. None without a demo report
    holding both heads at >= 2 seeds."""
    if not path.is_file():
        return None
    demo = json.loads(path.read_text())
    tests = {(run["head"], run["seed"]): run["test"] for run in demo.get("runs", [])}
    seeds = sorted(seed for head, seed in tests if head == "het" and ("det", seed) in tests)
    if len(seeds) < 2:
        return None
    differences = {name: paired_difference([tests[("het", seed)][name] for seed in seeds],
                                           [tests[("det", seed)][name] for seed in seeds])
                   for name in METRIC_NAMES}
    return {"source": str(path), "seeds": seeds, "epochs": demo["settings"]["epochs"],
            "train": demo["data"]["train"], "noise_rate": demo["settings"]["noise_rate"],
            "het_minus_det": differences, "targets": _targets(differences)}


def _demo_lines(report: dict[str, Any]) -> list[str]:
    demo = report["demo_runs"]
    if demo is None:
        return []
    diffs = demo["het_minus_det"]
    cells = " | ".join(_difference_cell(diffs[name], percent=name == "top1")
                       for name in METRIC_NAMES)
    targets = demo["targets"]
    return [
        "### The demo's runs (`make models`), same statistics",
        "",
        f"The demo trains on all {demo['train']} noisy training images for {demo['epochs']} "
        f"epochs at noise rate {demo['noise_rate']}, seeds {demo['seeds']} (one noise draw "
        "for every seed; per seed both heads share it, the data order and the "
        f"initialisation): HET - det [95 % paired t-interval] from `{demo['source']}`:",
        "",
        "| top-1 (points) | NLL | ECE |", "|---|---|---|", f"| {cells} |",
        "",
        "NLL interval excludes 0: "
        f"{'yes' if targets['nll_improvement_interval_excludes_0'] else 'NO'}; top-1 "
        f"interval not below 0: {'yes' if targets['top1_interval_not_below_0'] else 'NO'}.",
        "",
    ]


def _pooled_chance(runs: list[PairedRun]) -> float:
    weights = np.array([run.precision[DEFINITIONS[0]][1] for run in runs], dtype=np.float64)
    chances = np.array([run.chance for run in runs], dtype=np.float64)
    return float(np.sum(weights * chances) / weights.sum()) if weights.sum() else float("nan")


def _difference_cell(diff: PairedDifference, *, percent: bool) -> str:
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    return (f"{scale * diff.mean:+.{digits}f} [{scale * diff.low:+.{digits}f}, "
            f"{scale * diff.high:+.{digits}f}]")


def _proportion_cell(value: Proportion) -> str:
    return (f"{100 * value.value:.1f} % [{100 * value.low:.1f}, {100 * value.high:.1f}] "
            f"({value.successes}/{value.total})")


def _main_lines(report: dict[str, Any]) -> Iterator[str]:
    main = report["main"]
    yield ("| metric | HET (mean ± sd) | det (mean ± sd) | HET - det [95 % CI] | "
           "per-seed HET - det |")
    yield "|---|---|---|---|---|"
    for name in METRIC_NAMES:
        het, det = main["summary"]["het"][name], main["summary"]["det"][name]
        diff = main["het_minus_det"][name]
        percent = name == "top1"
        scale = 100.0 if percent else 1.0
        digits = 2 if percent else 4
        seeds = ", ".join(f"{scale * d:+.{digits}f}" for d in diff.differences)
        yield (f"| {name}{' (%)' if percent else ''} | {scale * het.mean:.{digits}f} ± "
               f"{scale * het.std:.{digits}f} | {scale * det.mean:.{digits}f} ± "
               f"{scale * det.std:.{digits}f} | {_difference_cell(diff, percent=percent)} | "
               f"{seeds} |")


def _missing_lines(report: dict[str, Any]) -> list[str]:
    missing = report["missing_pairs"]
    if not missing:
        return []
    pairs = ", ".join(f"(rate {rate}, seed {seed})" for rate, seed in missing)
    return [f"NOT TRAINED ({len(missing)} planned pairs; the run was stopped for time and "
            f"reported from the finished pairs): {pairs}. A rate with fewer than 2 finished "
            "seeds has no interval and is left out.", ""]


def _training_lines(report: dict[str, Any]) -> list[str]:
    """What the noisy validation split saw (the only split choices may use) and which epoch
    each run kept: a run keeping its last epoch was still improving."""
    main = [run for run in report["runs"] if run.noise_rate == report["main"]["noise_rate"]
            and run.seed in report["main"]["seeds"]]
    validation = paired_difference([run.het.validation.nll for run in main],
                                   [run.det.validation.nll for run in main])
    epochs = ", ".join(f"{run.het.best_epoch}/{run.det.best_epoch}" for run in main)
    return [
        f"On the NOISY validation split the same models give HET - det NLL "
        f"{_difference_cell(validation, percent=False)}. Best epoch per seed (HET/det, of "
        f"{report['settings']['epochs']}): {epochs}.",
        "",
    ]


def _sweep_lines(report: dict[str, Any]) -> Iterator[str]:
    yield "| noise rate | seeds | top-1 (points) HET - det | NLL HET - det | ECE HET - det |"
    yield "|---|---|---|---|---|"
    for rate, diffs in report["sweep"].items():
        yield (f"| {rate} | {diffs['top1'].n} | {_difference_cell(diffs['top1'], percent=True)} | "
               f"{_difference_cell(diffs['nll'], percent=False)} | "
               f"{_difference_cell(diffs['ece'], percent=False)} |")


def _precision_lines(report: dict[str, Any]) -> Iterator[str]:
    table = report["confusable_precision"]["table"]
    seeds = report["main"]["seeds"]
    yield "| first confusable class of the top-1 | pooled [95 % Wilson] | " + " | ".join(
        f"seed {seed}" for seed in seeds) + " |"
    yield "|---|---|" + "---|" * len(seeds)
    for row in table.values():
        cells = " | ".join(f"{100 * row['per_seed'][seed].value:.1f} % "
                           f"({row['per_seed'][seed].successes}/{row['per_seed'][seed].total})"
                           for seed in seeds)
        yield f"| {row['label']} | {_proportion_cell(row['pooled'])} | {cells} |"


def _verdicts(report: dict[str, Any]) -> list[str]:
    main, targets = report["main"]["het_minus_det"], report["main"]["targets"]
    nll, top1 = main["nll"], main["top1"]
    lines = [
        f"- Target 'NLL improvement's 95 % interval excludes 0': "
        f"{'MET' if targets['nll_improvement_interval_excludes_0'] else 'MISSED'} "
        f"(HET - det NLL {nll.mean:+.4f}, CI [{nll.low:+.4f}, {nll.high:+.4f}]).",
        f"- Target 'top-1's interval does not lie below 0': "
        f"{'MET' if targets['top1_interval_not_below_0'] else 'MISSED'} "
        f"(HET - det top-1 {100 * top1.mean:+.2f} points, CI [{100 * top1.low:+.2f}, "
        f"{100 * top1.high:+.2f}]).",
    ]
    losses = [f"{name} at rate {rate} ({_difference_cell(diff, percent=name == 'top1')})"
              for rate, diffs in report["sweep"].items() for name, diff in diffs.items()
              if ADVANTAGE_SIGN[name] * diff.mean < 0]
    if losses:
        lines.append("- Where HET's mean is WORSE than the deterministic head's (HET - det "
                     "[95 % CI]): " + "; ".join(losses) + ".")
    else:
        lines.append("- HET's mean is at least as good as the deterministic head's for every "
                     "metric at every noise rate of the sweep.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable claims report."""
    settings, chosen = report["settings"], report["hyperparameters"]
    precision = report["confusable_precision"]
    sizes = report["data"]
    data_words = (f"{sizes['train']} noisy training images + {sizes['validation']} as a noisy "
                  "validation split (the first "
                  f"{settings['train_limit'] or 60000} of the training set)")
    grid = [f"| {row['num_factors']} | {row['temperature']} | {row['val_nll']:.4f} |"
            for row in chosen.grid]
    return "\n".join([
        "# The paper's claims, with confidence intervals",
        "",
        f"Generated by `hetexport claims` (`make claims`): {len(report['runs'])} trained pairs, "
        f"{report['training_seconds'] / 60:.1f} min of training summed over the models "
        f"({settings['workers']} processes of {settings['num_threads']} torch thread(s) in "
        "parallel, on two cores shared with other jobs); this report took "
        f"{report['seconds'] / 60:.1f} min (pairs stored by an earlier invocation are reused, "
        "not retrained).",
        "",
        "## Setup",
        f"- Fashion-MNIST, {data_words}; label noise injected at the given rate into the "
        "groups {T-shirt/top, Pullover, Coat, Shirt} and {Sandal, Sneaker, Ankle boot} "
        "(`hetexport.label_noise`, as in the demo); every figure below is on the CLEAN test "
        f"set ({sizes['test']} images).",
        f"- SmallCNN {settings['backbone_kwargs']}, AdamW, batch {settings['batch_size']}, "
        f"{settings['epochs']} epochs (the demo: 5 on all 60k images), "
        "each run keeps its epoch with the lowest NOISY-validation NLL.",
        f"- HET head: R = {chosen.num_factors}, tau = {chosen.temperature}: {chosen.source}; "
        "nothing is tuned on the clean test set. Training MC samples "
        f"{settings['train_mc_samples']}, metrics (validation and test p_bar) "
        f"{settings['eval_mc_samples']} (the served models: 1000; fewer can only worsen HET's "
        "NLL a little).",
        "- Paired by seed: at seed s both heads get the same injected noise (noise seed s), "
        "the same validation split, the same minibatch order and the same backbone "
        "initialisation.",
        f"- Intervals: {report['methods']['differences']}, 95 %; proportions: "
        f"{report['methods']['proportions']}, 95 %.",
        "",
        *(["Demo grid (noisy validation NLL, "
           f"{chosen.grid_epochs} epochs, seed 0, first "
           f"{chosen.grid_train_limit or 60000} training images; lowest first):", "",
           "| R | tau | val NLL |", "|---|---|---|", *grid, ""] if grid else []),
        f"## 1. HET vs deterministic at noise rate {report['main']['noise_rate']} "
        f"({len(report['main']['seeds'])} seeds)",
        "",
        *_main_lines(report),
        "",
        *_verdicts(report),
        "",
        *_training_lines(report),
        *_demo_lines(report),
        "## 2. Across noise rates "
        f"(planned: {len(settings['sweep_seeds'])} seeds each, same settings)",
        "",
        *_missing_lines(report),
        "Cells: mean HET - det [95 % paired t-interval]. The plot shows the HET ADVANTAGE "
        "(top-1: HET - det; NLL and ECE: det - HET; above 0 = HET better).",
        "",
        *_sweep_lines(report),
        "",
        f"![HET advantage against the noise rate]({PLOT_FILES['advantage']})",
        "",
        "## 3. Per-input confusable precision (offline, the main-rate models)",
        "",
        "Clean test images whose true class is in a noisy group and whose top-1 is in that "
        "group; a hit when the first confusable class of the top-1 is in the same group "
        "(`hetexport.studies.confusable_precision`). HET rows use the top-1 of p_bar from one "
        f"fixed noise bank ({precision['noise_bank']['samples']} samples, seed "
        f"{precision['noise_bank']['seed']}: `claims_noise_bank`); the deterministic row its own "
        f"top-1. Chance (a uniformly random other class): {100 * precision['chance']:.1f} %. "
        "The pooled interval treats the seeds' images as independent, which they are not (the "
        "same test images at every seed): read it as the precision of the seeds' models on "
        "this test set.",
        "",
        *_precision_lines(report),
        "",
        f"![confusable precision]({PLOT_FILES['precision']})",
        "",
    ])
