"""The demo's figures (matplotlib, Agg backend, PNG files).

Typical usage::

    reliability_diagram({"HET": het_probs, "deterministic": det_probs}, labels, path)
    noise_sweep_plot(sweep_rows, path)
    correlation_matrix_plot(mean_correlation, class_names, groups, path)
    advantage_plot({0.3: {"nll": paired_nll_difference}}, {"nll": -1.0}, path)   # claims
    precision_plot({"definition": proportion}, path, chance=0.29)                # claims
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from hetexport.metrics import ECE_NUM_BINS, expected_calibration_error, reliability_bins  # noqa: E402
from hetexport.studies.summary import SweepPoint  # noqa: E402

FIGURE_DPI = 120
GROUP_OUTLINE_COLOR = "tab:red"


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return path


def reliability_diagram(
    probs_by_model: Mapping[str, np.ndarray],
    labels: np.ndarray,
    path: Path | str,
    *,
    num_bins: int = ECE_NUM_BINS,
) -> Path:
    """One panel per model: accuracy per confidence bin (bars), each bin's mean confidence
    (red dots; on the dashed diagonal when calibrated), bin sizes in grey, ECE in the title."""
    models = list(probs_by_model)
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for axis, name in zip(axes[0], models, strict=True):
        probs = probs_by_model[name]
        bins = reliability_bins(probs, labels, num_bins=num_bins)
        centers = 0.5 * (bins.edges[:-1] + bins.edges[1:])
        width = bins.edges[1] - bins.edges[0]
        filled = bins.counts > 0
        share = bins.counts / bins.counts.sum()
        axis.bar(centers, share, width=width, color="lightgrey", label="fraction of examples")
        axis.bar(centers[filled], bins.accuracy[filled], width=width, fill=False,
                 edgecolor="tab:blue", linewidth=1.5, label="accuracy")
        axis.plot(centers[filled], bins.confidence[filled], "o", color="tab:red", markersize=4,
                  label="mean confidence")
        axis.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = expected_calibration_error(probs, labels, num_bins=num_bins)
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)",
                 ylabel="accuracy", title=f"{name}: ECE {ece:.4f}")
        axis.legend(loc="upper left", fontsize=8)
    return _save(figure, Path(path))


def noise_sweep_plot(points: Sequence[SweepPoint], path: Path | str) -> Path:
    """Clean-test top-1 and NLL against the injected noise rate, one line per head."""
    figure, (accuracy_axis, nll_axis) = plt.subplots(1, 2, figsize=(9, 3.8))
    for head in sorted({point.head for point in points}):
        rows = sorted((p for p in points if p.head == head), key=lambda p: p.noise_rate)
        rates = [p.noise_rate for p in rows]
        accuracy_axis.plot(rates, [100 * p.top1 for p in rows], marker="o", label=head)
        nll_axis.plot(rates, [p.nll for p in rows], marker="o", label=head)
    accuracy_axis.set(xlabel="injected noise rate (group images)", ylabel="clean test top-1 (%)",
                      title="accuracy")
    nll_axis.set(xlabel="injected noise rate (group images)", ylabel="clean test NLL (nats)",
                 title="negative log-likelihood")
    for axis in (accuracy_axis, nll_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, Path(path))


def correlation_matrix_plot(
    correlation: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[Sequence[int]],
    path: Path | str,
    *,
    title: str = "latent logit correlation, mean over the clean test set",
) -> Path:
    """Heatmap of a [K, K] correlation matrix; rows and columns reordered so that each noisy
    group is contiguous, every group outlined."""
    classes = len(class_names)
    grouped = [cls for group in groups for cls in group]
    order = grouped + [cls for cls in range(classes) if cls not in grouped]
    matrix = np.asarray(correlation)[np.ix_(order, order)]
    figure, axis = plt.subplots(figsize=(7, 6))
    limit = float(np.max(np.abs(matrix - np.eye(classes)))) or 1.0
    image = axis.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    figure.colorbar(image, ax=axis, label="correlation (diagonal = 1, off the colour scale)")
    names = [class_names[cls] for cls in order]
    axis.set_xticks(range(classes), names, rotation=60, ha="right")
    axis.set_yticks(range(classes), names)
    for row in range(classes):
        for column in range(classes):
            if row != column:
                axis.text(column, row, f"{matrix[row, column]:.2f}", ha="center", va="center",
                          fontsize=7)
    start = 0
    for group in groups:
        axis.add_patch(Rectangle((start - 0.5, start - 0.5), len(group), len(group), fill=False,
                                 edgecolor=GROUP_OUTLINE_COLOR, linewidth=2.5))
        start += len(group)
    axis.set_title(f"{title}\n(outlined: the injected noisy groups)", fontsize=10)
    return _save(figure, Path(path))


ADVANTAGE_TITLES = {"top1": "top-1 (points): HET - det", "nll": "NLL (nats): det - HET",
                    "ece": "ECE: det - HET"}


def advantage_plot(
    differences: Mapping[float, Mapping[str, Any]],
    signs: Mapping[str, float],
    path: Path | str,
    *,
    main_rate: float | None = None,
) -> Path:
    """One panel per metric: the HET advantage ``sign * (HET - det)`` (above 0 = HET better)
    with its 95 % interval as error bars, against the injected noise rate.

    ``differences``: per noise rate, per metric, a ``PairedDifference`` (mean, low, high) of
    HET - det; top-1 is drawn in percentage points."""
    rates = sorted(differences)
    names = list(signs)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        scale = 100.0 if name == "top1" else 1.0
        sign = signs[name] * scale
        ends = [sorted((sign * differences[r][name].low, sign * differences[r][name].high))
                for r in rates]
        means = np.array([sign * differences[r][name].mean for r in rates])
        errors = np.array([[mean - low for mean, (low, _) in zip(means, ends, strict=True)],
                           [high - mean for mean, (_, high) in zip(means, ends, strict=True)]])
        axis.errorbar(rates, means, yerr=errors, marker="o", capsize=4, color="tab:blue")
        axis.axhline(0.0, color="black", linewidth=1)
        if main_rate is not None:
            axis.axvline(main_rate, color="tab:grey", linestyle=":", label="demo's rate")
            axis.legend(fontsize=8)
        axis.set(xlabel="injected noise rate (group images)",
                 title=ADVANTAGE_TITLES.get(name, name))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("HET advantage (mean, 95 % CI)")
    return _save(figure, Path(path))


def precision_plot(
    proportions: Mapping[str, Any], path: Path | str, *, chance: float | None = None
) -> Path:
    """Horizontal bars: each ``Proportion`` (value, low, high) in percent with its interval,
    and a dashed line at ``chance``."""
    labels = list(proportions)
    values = np.array([100 * proportions[label].value for label in labels])
    errors = np.array([[value - 100 * proportions[label].low for value, label in
                        zip(values, labels, strict=True)],
                       [100 * proportions[label].high - value for value, label in
                        zip(values, labels, strict=True)]])
    figure, axis = plt.subplots(figsize=(9, 0.7 * len(labels) + 1.6))
    positions = np.arange(len(labels))[::-1]
    axis.barh(positions, values, xerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    for position, value in zip(positions, values, strict=True):
        axis.text(1, position, f"{value:.1f} %", ha="left", va="center", color="white",
                  fontsize=9)
    if chance is not None:
        axis.axvline(100 * chance, color="tab:red", linestyle="--", label="chance")
        axis.legend(loc="lower left", fontsize=8)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.set(xlim=(0, 100), xlabel="first confusable class of the top-1 in the true group (%)",
             title="per-input confusable precision (pooled over seeds, 95 % Wilson)")
    return _save(figure, Path(path))
