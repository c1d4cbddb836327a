"""The demo's report from its runs: ``demo_report.json``, ``demo_report.md`` and the plots.

Typical usage::

    run = run_demo(config)                              # hetexport.studies.demo
    written = write_demo_report(run, Path("reports"))
    written.report_markdown, written.plots["reliability"]
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hetexport.label_noise import (
    AMBIGUITY_POWER,
    FASHION_MNIST_NOISY_GROUPS,
    MAX_FLIP_PROBABILITY,
    SIMILARITY_POWER,
)
from hetexport.onnx.export import DEFAULT_NOISE_SEED as EXPORT_NOISE_SEED
from hetexport.studies.demo import CorrelationRanking, DemoRun
from hetexport.studies.plots import correlation_matrix_plot, noise_sweep_plot, reliability_diagram
from hetexport.studies.report import (
    REPORT_JSON,
    StudyReport,
    comparison_table,
    ranking_table,
    write_report,
)
from hetexport.studies.summary import mean_pair_correlation, within_group_precision

PLOT_FILES = {
    "reliability": "reliability_diagrams.png",
    "noise_sweep": "noise_sweep.png",
    "correlation": "class_correlation.png",
}
CORRELATION_PLOT_TITLE = ("centred latent logit correlation corr(C Sigma C), "
                          "C = I - 11^T/K; mean over the clean test set")


def write_demo_report(run: DemoRun, report_dir: Path) -> StudyReport:
    """Plots, JSON and Markdown of ``run`` into ``report_dir``."""
    plots = draw_plots(run, report_dir)
    report = report_dict(run)
    return write_report(report, render_markdown(report, run), report_dir, plots=plots)


def draw_plots(run: DemoRun, report_dir: Path) -> dict[str, Path]:
    """The reliability diagrams (seed-0 test probabilities per head), the centred correlation
    heatmap and the noise sweep."""
    return {
        "reliability": reliability_diagram(
            {"HET": run.test_probs["het"], "deterministic": run.test_probs["det"]},
            run.test_labels, report_dir / PLOT_FILES["reliability"]),
        "noise_sweep": noise_sweep_plot(run.sweep, report_dir / PLOT_FILES["noise_sweep"]),
        "correlation": correlation_matrix_plot(
            run.correlation.centered, run.class_names, FASHION_MNIST_NOISY_GROUPS,
            report_dir / PLOT_FILES["correlation"], title=CORRELATION_PLOT_TITLE),
    }


def report_dict(run: DemoRun) -> dict[str, Any]:
    """The report's content (``demo_report.json`` once made JSON): a full run's figures, or
    a re-evaluation's on top of the previous full run's report."""
    plots = dict(PLOT_FILES)
    if run.reevaluation is not None:
        return {**run.reevaluation.previous,
                "correlation": _correlation_summary(run.correlation),
                "plots": plots, "exported": run.exported,
                "reevaluation": {"what": _reevaluation_text(run),
                                 "seconds": run.reevaluation.seconds}}
    config, noise = run.config, run.noise
    assert noise is not None
    het, det = run.summary["het"], run.summary["det"]
    return {
        "settings": asdict(config),
        "machine": {"platform": platform.platform(), "torch_threads": config.num_threads},
        "data": {**run.sizes, "class_names": list(run.class_names)},
        "label_noise": {
            "rate": config.noise_rate, "realised_rate": noise.realised_rate,
            "groups": [list(group) for group in FASHION_MNIST_NOISY_GROUPS],
            "ambiguity_power": AMBIGUITY_POWER, "similarity_power": SIMILARITY_POWER,
            "max_flip_probability": MAX_FLIP_PROBABILITY,
            "transition_counts": noise.transition_counts.tolist(),
        },
        "grid": {"rows": run.grid, "epochs": config.grid_epochs, "seconds": run.grid_seconds,
                 "chosen": {"num_factors": run.grid[0].num_factors,
                            "temperature": run.grid[0].temperature}},
        "runs": run.runs,
        "summary": run.summary,
        "het_minus_det": {name: het[name].mean - det[name].mean for name in het},
        "targets": {"het_nll_below_det": het["nll"].mean < det["nll"].mean,
                    "het_top1_not_lower": het["top1"].mean >= det["top1"].mean},
        "correlation": _correlation_summary(run.correlation),
        "noise_sweep": {"points": run.sweep, "epochs": config.sweep_epochs, "seeds": [0],
                        "seconds": run.sweep_seconds},
        "plots": plots,
        "checkpoints": run.checkpoints,
        "exported": run.exported,
        "seconds": run.seconds,
    }


def _correlation_summary(correlation: CorrelationRanking) -> dict[str, Any]:
    """``ranking`` etc. are of the centred correlation (most negative first); ``raw_*`` of the
    raw correlation (most positive first), for comparison."""
    ranking, raw_ranking = correlation.ranking, correlation.raw_ranking
    return {
        "definition": "corr(C Sigma C), C = I - 11^T/K; pairs ranked most negative first",
        "mean_over_test_and_seeds": correlation.centered,
        "ranking": ranking,
        "within_group_precision": within_group_precision(ranking),
        "within_group_precision_by_magnitude": within_group_precision(correlation.by_magnitude),
        "mean_within_group": mean_pair_correlation(ranking, within=True),
        "mean_other_pairs": mean_pair_correlation(ranking, within=False),
        "raw_mean_over_test_and_seeds": correlation.raw,
        "raw_ranking": raw_ranking,
        "raw_within_group_precision": within_group_precision(raw_ranking),
    }


def _reevaluation_text(run: DemoRun) -> str:
    config, reevaluation = run.config, run.reevaluation
    assert reevaluation is not None
    stamps = ", ".join(f"`{path}` (written {_utc(reevaluation.written[head])})"
                       for head, path in reevaluation.checkpoints.items())
    exported = run.exported
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
        "setup, the hyperparameter grid, the per-seed clean-test figures, the noise sweep (its "
        "plot redrawn from those figures), and the run time quoted at the top. The ranking "
        "above is therefore of the seed-0 HET model alone, where a full run averages over the "
        "seeds.")


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def render_markdown(report: dict[str, Any], run: DemoRun) -> str:
    """The human-readable report (the README quotes it): ``report`` from ``report_dict``, the
    typed figures (grid, sweep, summary, ranking) from ``run``."""
    settings, noise = report["settings"], report["label_noise"]
    grid = {**report["grid"], "rows": run.grid}
    diff, targets = report["het_minus_det"], report["targets"]
    correlation = run.correlation
    ranking, figures = correlation.ranking, report["correlation"]
    within = sum(pair.within_noisy_group for pair in ranking)
    raw_top = sum(pair.within_noisy_group for pair in correlation.raw_ranking[:within])
    grid_lines = ["| R | tau | val top-1 (%) | val NLL | val ECE |", "|---|---|---|---|---|"]
    grid_lines += [f"| {row.num_factors} | {row.temperature} | {100 * row.val_top1:.2f} | "
                   f"{row.val_nll:.4f} | {row.val_ece:.4f} |" for row in grid["rows"]]
    sweep_lines = ["| noise rate | head | top-1 (%) | NLL |", "|---|---|---|---|"]
    sweep_lines += [f"| {p.noise_rate} | {p.head} | {100 * p.top1:.2f} | {p.nll:.4f} |"
                    for p in run.sweep]
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
        f"head; AdamW (batch {settings['batch_size']}), {_schedule_words(settings)}, best "
        f"epoch by noisy-validation NLL; HET trains with {settings['train_mc_samples']} MC "
        "samples and is evaluated with "
        f"{settings.get('eval_mc_samples', settings['export_mc_samples'])} fresh ones.",
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
        comparison_table(run.summary),
        "",
        *_epochs_lines(run),
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


def _schedule_words(settings: dict[str, Any]) -> str:
    patience = settings.get("patience")
    if patience is None:
        return f"cosine decay, {settings['epochs']} epochs"
    return (f"cosine decay over at most {settings['epochs']} epochs, stopped once the "
            f"noisy-validation NLL had not improved for {patience} epochs")


def _epochs_lines(run: DemoRun) -> list[str]:
    """Which epoch each run kept, of how many it ran; a run that reached the bound and kept
    its last epoch was still improving when the bound stopped it: by how much it still was."""
    if any(seed_run.epochs is None for seed_run in run.runs):
        return []
    bound, patience = run.config.epochs, run.config.patience or 1
    cells = ", ".join(f"{r.head} seed {r.seed}: {r.best_epoch} of {r.epochs}" for r in run.runs)
    stopped = sum(r.epochs < bound for r in run.runs)
    improving = [r for r in run.runs if r.best_epoch == r.epochs == bound]
    lines = [f"Best epoch, of the epochs run: {cells}. {stopped} of {len(run.runs)} runs stopped "
             f"because the noisy-validation NLL had stopped improving; {len(improving)} reached "
             f"the bound of {bound} epochs still improving (best epoch = last)"]
    if improving and bound > patience:
        gain = max(r.validation_nll[-1 - patience] - r.validation_nll[-1] for r in improving)
        lines[0] += (f", their NLL down by at most {gain:.4f} over their last {patience} "
                     "epochs")
    return [lines[0] + ".", ""]


def _correlation_source(report: dict[str, Any]) -> str:
    if "reevaluation" in report:
        return "the seed-0 model only, re-evaluated: see the last section"
    return "the seeds"


def _reevaluation_note(report: dict[str, Any]) -> list[str]:
    note = report.get("reevaluation")
    if note is None:
        return []
    return ["## What this report re-ran", "", note["what"], ""]
