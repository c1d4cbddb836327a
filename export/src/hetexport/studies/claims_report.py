"""The claims' report from their runs: ``claims.json``, ``claims.md`` and two plots.

Typical usage::

    run = run_claims(ClaimsConfig())                   # hetexport.studies.claims
    written = write_claims_report(run, Path("reports"))
    written.report_markdown                            # reports/claims.md
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hetexport.label_noise import FASHION_MNIST_NOISY_GROUPS
from hetexport.layers.heads import DEFAULT_MC_SAMPLES
from hetexport.statistics import PAIRED_METHOD, WILSON_METHOD, PairedDifference, Proportion
from hetexport.studies.claims import ADVANTAGE_SIGN, DEFINITION_LABELS, ClaimsRun
from hetexport.studies.plots import advantage_plot, precision_plot
from hetexport.studies.report import StudyReport, write_report
from hetexport.studies.summary import METRIC_NAMES

CLAIMS_JSON = "claims.json"
CLAIMS_MARKDOWN = "claims.md"
PLOT_FILES = {"advantage": "claims_advantage.png",
              "precision": "claims_confusable_precision.png"}


def write_claims_report(run: ClaimsRun, report_dir: Path) -> StudyReport:
    """Plots, JSON and Markdown of ``run`` into ``report_dir``."""
    plots = draw_plots(run, report_dir)
    report = report_dict(run)
    return write_report(report, render_markdown(report), report_dir, plots=plots,
                        json_name=CLAIMS_JSON, markdown_name=CLAIMS_MARKDOWN)


def draw_plots(run: ClaimsRun, report_dir: Path) -> dict[str, Path]:
    """The HET advantage against the noise rate; the confusable precision per definition."""
    return {
        "advantage": advantage_plot(run.sweep, ADVANTAGE_SIGN,
                                    report_dir / PLOT_FILES["advantage"],
                                    main_rate=run.config.noise_rate),
        "precision": precision_plot({DEFINITION_LABELS[name]: row["pooled"]
                                     for name, row in run.precision.items()},
                                    report_dir / PLOT_FILES["precision"], chance=run.chance),
    }


def report_dict(run: ClaimsRun) -> dict[str, Any]:
    """The report's content (``claims.json`` once made JSON)."""
    config, main_runs = run.config, run.main_runs
    return {
        "settings": asdict(config),
        "hyperparameters": run.hyperparameters,
        "methods": {"differences": PAIRED_METHOD, "proportions": WILSON_METHOD,
                    "confidence": 0.95, "sign": "differences are HET - det; lower NLL and ECE "
                    "and higher top-1 are better"},
        "data": main_runs[0].sizes,
        "missing_pairs": run.missing,
        "main": {"noise_rate": config.noise_rate, "seeds": [r.seed for r in main_runs],
                 "realised_noise_rates": [r.realised_noise_rate for r in main_runs],
                 "summary": run.main_summary,
                 "het_minus_det": run.main, "targets": run.targets,
                 "validation_nll_het_minus_det": run.main_validation_nll},
        "sweep": {str(rate): diff for rate, diff in run.sweep.items()},
        "confusable_precision": {"groups": FASHION_MNIST_NOISY_GROUPS, "table": run.precision,
                                 "chance": run.chance,
                                 "noise_bank": {"samples": config.bank_samples,
                                                "seed": config.bank_seed}},
        "demo_runs": run.demo,
        "runs": run.runs,
        "plots": dict(PLOT_FILES),
        "training_seconds": run.training_seconds,
        "seconds": run.seconds,
    }


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
        f"The demo trains on all {demo['train']} noisy training images for "
        f"{_demo_epochs(demo)} epochs at noise rate {demo['noise_rate']}, seeds "
        f"{demo['seeds']} (one noise draw for every seed; per seed both heads share it, the "
        "data order and the "
        f"initialisation): HET - det [95 % paired t-interval] from `{demo['source']}`:",
        "",
        "| top-1 (points) | NLL | ECE |", "|---|---|---|", f"| {cells} |",
        "",
        "NLL interval excludes 0: "
        f"{'yes' if targets['nll_improvement_interval_excludes_0'] else 'NO'}; top-1 "
        f"interval not below 0: {'yes' if targets['top1_interval_not_below_0'] else 'NO'}.",
        "",
    ]


def _demo_epochs_words(report: dict[str, Any]) -> str:
    demo = report["demo_runs"]
    if demo is None:
        return ""
    return f" (the demo's main runs: {_demo_epochs(demo)} on all {demo['train']} images)"


def _demo_epochs(demo: dict[str, Any]) -> str:
    if demo.get("patience") is None:
        return str(demo["epochs"])
    return f"up to {demo['epochs']}, stopped after {demo['patience']} without improvement"


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
    validation = report["main"]["validation_nll_het_minus_det"]
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
        f"{settings['epochs']} epochs{_demo_epochs_words(report)}, "
        "each run keeps its epoch with the lowest NOISY-validation NLL.",
        f"- HET head: R = {chosen.num_factors}, tau = {chosen.temperature}: {chosen.source}; "
        "nothing is tuned on the clean test set. Training MC samples "
        f"{settings['train_mc_samples']}, metrics (validation and test p_bar) "
        f"{settings['eval_mc_samples']} (the demo's metrics: {DEFAULT_MC_SAMPLES}; fewer can "
        "only worsen HET's NLL a little).",
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
