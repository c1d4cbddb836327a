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

    run = run_claims(ClaimsConfig())                   # trains, compares, counts: data
    write_claims_report(run, Path("reports"))        # hetexport.studies.claims_report
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
from hetexport.jsonable import to_jsonable
from hetexport.label_noise import DEFAULT_NOISE_RATE, FASHION_MNIST_NOISY_GROUPS
from hetexport.layers import NoiseBank
from hetexport.layers.heads import DEFAULT_MC_SAMPLES
from hetexport.model import HetClassifier, ModelSpec
from hetexport.onnx.export import DEFAULT_NOISE_SEED as EXPORT_NOISE_SEED
from hetexport.statistics import PairedDifference, paired_difference, wilson_interval
from hetexport.studies.confusable_precision import (
    chance_precision,
    group_confusable_precision,
    runner_up_ids,
)
from hetexport.studies.demo import (
    DEMO_BACKBONE_KWARGS,
    DEMO_BATCH_SIZE,
)
from hetexport.studies.summary import (
    METRIC_NAMES,
    MetricSummary,
    SeedRun,
    seed_run_from_json,
    summarize_runs,
)
from hetexport.training import TrainConfig
from hetexport.training.config import DEFAULT_EVAL_BATCH_SIZE, DEFAULT_TRAIN_MC_SAMPLES
from hetexport.training.experiment import PreparedData, fit, prepare_fashion_mnist

RUNS_FILE = "claims_runs.json"
"""Finished pairs, kept in ``work_dir`` so that an interrupted run resumes (same settings)."""
CLAIMS_SEEDS = 5
CLAIMS_SWEEP_RATES = (0.0, 0.15, 0.3, 0.45)
CLAIMS_SWEEP_SEEDS = 3
CLAIMS_EPOCHS = 4
"""One fewer than the demo's main runs (time budget)."""
CLAIMS_TRAIN_LIMIT = 20_000
"""First 20k training images (18k train + 2k noisy validation), as the demo's grid and sweep
(its main runs use all 60k): the whole run (14 pairs) must fit ~40 min on two cores shared
with other jobs."""
CLAIMS_METRIC_MC_SAMPLES = 250
"""MC samples behind the HET head's p_bar for the validation and test METRICS (the demo's
metrics use ``layers.heads.DEFAULT_MC_SAMPLES``; fewer samples can only make HET's NLL
slightly worse: E[log p_hat] <= log p). The confusable classes use ``bank_samples``."""
CLAIMS_NUM_THREADS = 1
CLAIMS_WORKERS = 2
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

    data_dir: Path = DEFAULT_FASHION_MNIST_DIR
    work_dir: Path = Path("runs/claims")
    demo_report: Path = Path("reports/demo_report.json")
    noise_rate: float = DEFAULT_NOISE_RATE
    seeds: tuple[int, ...] = tuple(range(CLAIMS_SEEDS))
    sweep_rates: tuple[float, ...] = CLAIMS_SWEEP_RATES
    sweep_seeds: tuple[int, ...] = tuple(range(CLAIMS_SWEEP_SEEDS))
    epochs: int = CLAIMS_EPOCHS
    train_limit: int | None = CLAIMS_TRAIN_LIMIT
    test_limit: int | None = None
    num_factors: int | None = None
    temperature: float | None = None
    batch_size: int = DEMO_BATCH_SIZE
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEMO_BACKBONE_KWARGS))
    train_mc_samples: int = DEFAULT_TRAIN_MC_SAMPLES
    eval_mc_samples: int = CLAIMS_METRIC_MC_SAMPLES
    bank_samples: int = DEFAULT_MC_SAMPLES
    bank_seed: int = EXPORT_NOISE_SEED
    num_confusable: int = 1
    num_threads: int = CLAIMS_NUM_THREADS
    workers: int = CLAIMS_WORKERS
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


class ClaimsRun(NamedTuple):
    """Everything ``run_claims`` found, as data (``hetexport.studies.claims_report`` renders
    it): the pairs, the paired differences HET - det at the main rate (``main``, on the noisy
    validation split ``main_validation_nll``) and per sweep rate, the planned pairs not
    trained, the confusable precision table and its chance level, the demo's own runs."""

    config: ClaimsConfig
    hyperparameters: Hyperparameters
    runs: list[PairedRun]
    main_runs: list[PairedRun]
    main: dict[str, PairedDifference]
    main_summary: dict[str, dict[str, MetricSummary]]
    main_validation_nll: PairedDifference
    targets: dict[str, bool]
    sweep: dict[float, dict[str, PairedDifference]]
    missing: list[tuple[float, int]]
    precision: dict[str, dict[str, Any]]
    chance: float
    demo: dict[str, Any] | None
    training_seconds: float
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
        raise InputError(f"no demo report at {config.demo_report}: run the demo first, or give "
                         "R and tau (num_factors, temperature)")
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
                             result.validation, result.test,
                             tuple(r.validation.nll for r in result.training.history))
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
    for key in ("work_dir", "demo_report", "seeds", "sweep_rates", "sweep_seeds",
                "progress", "resume", "train_missing", "num_threads", "workers"):
        settings.pop(key)
    settings.update(num_factors=chosen.num_factors, temperature=chosen.temperature)
    return json.loads(json.dumps(to_jsonable(settings)))


def _run_from_json(data: dict[str, Any]) -> PairedRun:
    return PairedRun(data["noise_rate"], data["seed"], data["realised_noise_rate"], data["sizes"],
                     seed_run_from_json(data["het"]), seed_run_from_json(data["det"]),
                     data["precision"], data["chance"])


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


def run_claims(config: ClaimsConfig) -> ClaimsRun:
    """Items 1-4 of the module doc: train, compare and count (``claims_report`` renders)."""
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
    trained = {(run.noise_rate, run.seed) for run in runs}
    return ClaimsRun(
        config=config, hyperparameters=chosen, runs=runs, main_runs=main_runs, main=main,
        main_summary=summarize_runs([r for run in main_runs for r in (run.het, run.det)]),
        main_validation_nll=paired_difference([run.het.validation.nll for run in main_runs],
                                              [run.det.validation.nll for run in main_runs]),
        targets=_targets(main),
        sweep={rate: paired_differences(chosen_runs) for rate, chosen_runs in by_rate.items()
               if len(chosen_runs) >= 2},
        missing=[pair for pair in planned_pairs(config) if pair not in trained],
        precision=precision_table(main_runs), chance=_pooled_chance(main_runs),
        demo=demo_differences(config.demo_report),
        training_seconds=sum(run.het.seconds + run.det.seconds for run in runs),
        seconds=time.perf_counter() - started)


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
            "patience": demo["settings"].get("patience"),
            "train": demo["data"]["train"], "noise_rate": demo["settings"]["noise_rate"],
            "het_minus_det": differences, "targets": _targets(differences)}


def _pooled_chance(runs: list[PairedRun]) -> float:
    weights = np.array([run.precision[DEFINITIONS[0]][1] for run in runs], dtype=np.float64)
    chances = np.array([run.chance for run in runs], dtype=np.float64)
    return float(np.sum(weights * chances) / weights.sum()) if weights.sum() else float("nan")
