"""What withholding the confusable shares costs, limit by limit: the share error left against
the exact integral and the share of moving top classes withheld, for every pair of
withholding limits, with the shipped model's own bank.

The served head withholds a top class's shares (``hetexport.class_correlation``) when the
relative standard error of its probability's variance exceeds ``MOVEMENT_RELATIVE_ERROR_MAX``
or a share's standard error (half the difference between the bank's two halves) exceeds
``SHARE_STANDARD_ERROR_MAX``. Issue 24 asks for shares within 0.10 of exact at p99; the
shipped limits (0.30, 0.075) leave a p99 just above it with almost half the moving classes
withheld (``make bench-uncertainty``'s error section). This study answers, before anyone
re-exports the models: which limits would meet the target, and what they withhold.

How: the shipped ``fashion_het`` checkpoint (``runs/demo/fashion_het.pt``, written by
``make models``) with the bank read from the shipped ONNX graph's initializers
(``noise_factors``, ``noise_diag``: the served samples exactly), on ``--images`` test images
from ``--first-image`` (the images ``make bench-uncertainty`` measures the error on). The
serving graph's own computation in PyTorch (``ServingGraph.statistics`` and ``.shares``) gives
every top class's shares and its two standard errors; the exact shares come from the exact
covariance of the sampled probabilities (``hetexport.exact``: randomized QMC, 2^18 points). A
top class counts where the noise moves its probability by at least ``SHARE_RELEVANT_STD``
(exact), as in ``hetexport.exact.error``: per image the largest error of its served (not
withheld) relevant classes' confusable shares; the p99 over images, and the share of relevant
classes withheld. The row at the shipped limits is what ``make bench-uncertainty`` reports for
the ONNX graph (up to float32 rounding): the check that this study measures the served head.

The limits are chosen on other images than those they are reported on: the pair that meets the
target with the least withheld on ``--choice-images`` images just before the test images (the
images the export fits its bank on come before 9000 too; a limit is not a fitted bank), then
read on the test images. The whole table is printed for the test images.

Reproduce: ``make bench-share-withholding`` (``.venv/bin/python bench/share_withholding.py``);
options ``--images 1000 --first-image 9000 --choice-images 1000``. Needs the checkpoint
(``make models``). The result
goes to ``bench/results/share-withholding-<machine>.json`` with its provenance.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch
from hetcontract import MODEL_CARD_FILENAME, ModelCard
from hetexport.checkpoint import load_checkpoint
from hetexport.class_correlation import (
    MOVEMENT_RELATIVE_ERROR_MAX,
    SHARE_STANDARD_ERROR_MAX,
    confusable_from_shares,
    shares_from_covariance,
)
from hetexport.exact.error import PERCENTILE, SHARE_RELEVANT_STD
from hetexport.exact.measure import reference_for
from hetexport.fused.ensemble import baked_noise_bank
from hetexport.layers import NoiseBank
from hetexport.serving.head import ServingGraph
from loopback_target import fashion_images, preprocess
from provenance import write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_P99 = 0.10
"""Issue 24: confusable shares within 0.10 of exact at the 99th percentile."""
SHARE_LIMITS = (0.03, 0.04, 0.05, 0.055, 0.06, 0.065, 0.07, 0.075, 0.08, 0.09, 0.10, 0.15, 1.0)
MOVEMENT_LIMITS = (0.20, 0.25, 0.30, 0.40, 0.60, 1.0)
"""Limits tried (1.0: that test off in effect; the shipped pair is among them)."""
MEASURED = ["model_repo/fashion_het", "export/src/hetexport/exact",
            "export/src/hetexport/serving", "export/src/hetexport/layers",
            "export/src/hetexport/class_correlation.py"]
"""The shipped model and the head's code (the checkpoint, from ``make models``, is not in git)."""


def main() -> int:
    args = parse_args()
    repository = Path(args.model_repository)
    card = ModelCard.model_validate_json((repository / "fashion_het" / MODEL_CARD_FILENAME)
                                         .read_text())
    model = load_checkpoint(args.checkpoint).model.eval()
    bank = baked_noise_bank(repository / "fashion_het")
    first_choice = args.first_image - args.choice_images
    images = torch.from_numpy(preprocess(
        fashion_images(limit=args.first_image + args.images), card)[first_choice:])
    started = time.perf_counter()
    reference = reference_for(model, images)
    print(f"reference: {len(images)} images in {time.perf_counter() - started:.0f} s")
    classes = per_class_errors(model, bank, images, reference.exact.probability_covariance,
                               top_k=card.top_k, num_confusable=card.num_confusable)
    choice = {name: value[: args.choice_images] for name, value in classes.items()}
    test = {name: value[args.choice_images :] for name, value in classes.items()}
    choice_rows, test_rows = limit_table(choice), limit_table(test)
    chosen = least_withheld(choice_rows)
    report = {
        "checkpoint": args.checkpoint, "samples": bank.num_samples, "target_p99": TARGET_P99,
        "choice_images": {"first": first_choice, "count": args.choice_images,
                          "relevant_classes": int(choice["relevant"].sum())},
        "test_images": {"first": args.first_image, "count": args.images,
                        "relevant_classes": int(test["relevant"].sum())},
        "shipped": {"share_standard_error_max": SHARE_STANDARD_ERROR_MAX,
                    "movement_relative_error_max": MOVEMENT_RELATIVE_ERROR_MAX},
        "choice_rows": choice_rows,
        "rows": test_rows,
        "chosen": None if chosen is None else {
            "on_choice_images": chosen, "on_test_images": _same_limits(test_rows, chosen)},
        "shipped_on_test_images": _same_limits(test_rows, {
            "share_standard_error_max": SHARE_STANDARD_ERROR_MAX,
            "movement_relative_error_max": MOVEMENT_RELATIVE_ERROR_MAX}),
    }
    print_report(report)
    write_result(report, "share-withholding", measures=MEASURED)
    return 0


def limit_table(classes: dict[str, np.ndarray]) -> list[dict]:
    """``limit_row`` for every pair of ``SHARE_LIMITS`` and ``MOVEMENT_LIMITS``."""
    return [limit_row(classes, share, move)
            for share, move in itertools.product(SHARE_LIMITS, MOVEMENT_LIMITS)]


@torch.no_grad()
def per_class_errors(model, bank: NoiseBank, images: torch.Tensor, exact_covariance: torch.Tensor,
                     *, top_k: int, num_confusable: int) -> dict[str, np.ndarray]:
    """Per image and top class [N, k]: the largest error of its served confusable shares
    against exact, whether the noise moves it (``relevant``), whether the head serves shares
    for it at all (``moving``), and its two standard errors."""
    graph = ServingGraph(model, noise=bank, top_k=top_k, num_confusable=num_confusable)
    stats, _ = graph.statistics(images)
    estimate = graph.shares(stats)
    top_ids = stats.topk_ids
    ids, served = confusable_from_shares(estimate.shares, top_ids, num_confusable)
    index = top_ids.unsqueeze(-1).expand(-1, -1, exact_covariance.shape[1])
    rows = torch.gather(exact_covariance, 1, index)  # exact Cov(p_i, p_j) rows [N, k, K]
    exact = torch.gather(shares_from_covariance(rows, top_ids, rule=graph.correlation_rule),
                         2, ids)
    variance = torch.gather(rows, 2, top_ids.unsqueeze(-1)).squeeze(-1)
    return {
        "error": (served.double() - exact).abs().amax(-1).numpy(),
        "relevant": (variance >= SHARE_RELEVANT_STD**2).numpy(),
        "moving": estimate.moving.numpy(),
        "variance_error": estimate.variance_error.double().numpy(),
        "share_error": estimate.share_error.double().numpy(),
    }


def limit_row(classes: dict[str, np.ndarray], share_limit: float, movement_limit: float) -> dict:
    """The p99 over images of the largest served error, and the share of relevant classes
    withheld, at one pair of limits (the served rule: ``ShareEstimate.withheld``)."""
    withheld = classes["moving"] & ((classes["variance_error"] > movement_limit)
                                    | (classes["share_error"] > share_limit))
    relevant = classes["relevant"]
    served = relevant & ~withheld
    per_image = np.where(served, classes["error"], 0.0).max(1)
    return {
        "share_standard_error_max": share_limit,
        "movement_relative_error_max": movement_limit,
        "p99": float(np.percentile(per_image, PERCENTILE)),
        "mean": float(per_image.mean()),
        "withheld": float((relevant & withheld).sum() / max(int(relevant.sum()), 1)),
    }


def least_withheld(rows: list[dict]) -> dict | None:
    """The pair of limits meeting the target that withholds least (None if none does)."""
    meeting = [row for row in rows if row["p99"] <= TARGET_P99]
    return min(meeting, key=lambda row: (row["withheld"], row["p99"])) if meeting else None


def print_report(report: dict) -> None:
    shipped = report["shipped"]
    test = report["test_images"]
    print(f"{test['relevant_classes']} moving top classes over {test['count']} test images, "
          f"S = {report['samples']}; p99 share error / withheld, by share limit (rows) and "
          "movement limit (columns); * the shipped limits")
    print("share\\move " + "".join(f"{m:>16g}" for m in MOVEMENT_LIMITS))
    for share in SHARE_LIMITS:
        cells = [row for row in report["rows"] if row["share_standard_error_max"] == share]
        print(f"{share:>10g} " + "".join(
            f"{row['p99']:>8.3f} /{100 * row['withheld']:>4.0f}%"
            + ("*" if _at_limits(row, shipped) else " ") for row in cells))
    chosen = report["chosen"]
    if chosen is None:
        print(f"no pair of limits meets p99 <= {TARGET_P99} on the choice images")
        return
    pick, held_out = chosen["on_choice_images"], chosen["on_test_images"]
    print(f"chosen on the choice images (least withheld with p99 <= {TARGET_P99}): share limit "
          f"{pick['share_standard_error_max']:g}, movement limit "
          f"{pick['movement_relative_error_max']:g}; there p99 {pick['p99']:.3f}, withheld "
          f"{100 * pick['withheld']:.1f} %; on the test images p99 {held_out['p99']:.3f}, "
          f"withheld {100 * held_out['withheld']:.1f} %")
    shipped_row = report["shipped_on_test_images"]
    print(f"shipped limits on the test images: p99 {shipped_row['p99']:.3f}, withheld "
          f"{100 * shipped_row['withheld']:.1f} %")


def _same_limits(rows: list[dict], limits: dict) -> dict:
    """The row of ``rows`` at the limits of ``limits``."""
    return next(row for row in rows if _at_limits(row, limits))


def _at_limits(row: dict, limits: dict) -> bool:
    """Whether ``row`` is at the limits of ``limits``."""
    return (math.isclose(row["share_standard_error_max"], limits["share_standard_error_max"])
            and math.isclose(row["movement_relative_error_max"],
                             limits["movement_relative_error_max"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "runs/demo/fashion_het.pt"))
    parser.add_argument("--images", type=int, default=1000,
                        help="test images (a p99 over 400 is their 4th-largest error)")
    parser.add_argument("--first-image", type=int, default=9000,
                        help="first test image (the export fits and measures before this)")
    parser.add_argument("--choice-images", type=int, default=1000,
                        help="images just before the test images on which the limits are "
                             "chosen (never the images they are reported on)")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
