"""Decisions with guarantees on the shipped models: prediction sets, abstention at a stated
risk and the label-free accuracy estimate, HET (``fashion_het``) vs plain (``fashion_det``).

Both models run through ONNX Runtime on their exported graphs (``model_repo/<name>/1/
model.onnx``, the graph Triton serves), and decisions are computed with the contract's scores
(``hetcontract.decision_scores``), the code the gateway applies.

1. **Clean-label splits.** The 10,000 clean Fashion-MNIST test images (never trained on) are
   split ``--splits`` times (seeded) into ``--calibration-images`` for ``hetexport.calibration
   .calibrate`` (label source "clean", its own tuning/calibration split inside) and the rest
   for testing. Per coverage level: the served set's coverage (mean and 5th percentile over
   splits) and mean size, and every method's for comparison; per risk: the realised top-1
   error among accepted test images, how often it exceeds r, and the accepted fraction; the
   ATC estimate's error (absolute, vs the test part's true accuracy) on the clean test part
   and under each shift.
2. **The export's noisy-label calibration.** The thresholds the exported card carries
   (``calibration``; computed here exactly as the export does when the card has none: on the
   demo's held-out NOISY validation split) evaluated on all 10,000 clean test images, and on
   the same images with labels noised by the demo's recipe (``hetexport.label_noise``,
   another seed): the labels such a calibration speaks for.
3. **Shifts** applied to the test pixels: Gaussian noise (std as a fraction of 255), Gaussian
   blur (std in pixels) and low contrast (pixels pulled toward the image's mean by a factor),
   three strengths each.
4. **The gateway's cost**: the CPU time ``hetgateway.answer.result_layouts`` adds per request
   when the answer carries the set and the decision (and the ATC window is updated), batch 1
   and 16, medians of repeated runs, against the same call without them.

Targets (issue 22): coverage within 1.5 points of the level at every level (mean over
splits); HET's mean set size <= the plain model's at each level; at r = 5 %, delta = 0.1 the
realised risk <= 5 % in >= 90 % of splits and HET accepting at least as many images as the
plain model; the ATC estimate within 3 points of the true accuracy in distribution and within
5 under every shift (mean absolute error over splits); <= 0.02 ms gateway CPU per request.

Reproduce: ``make bench-decisions`` (``.venv/bin/python bench/decisions.py``); results in
``bench/results/decisions-<machine>.json`` with their provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hetcontract import Calibration, ModelCard, OutputName
from hetcontract.decision_scores import accepted, confidence, set_membership
from hetexport.calibration import (
    CalibrationConfig,
    atc_estimate,
    atc_threshold,
    calibrate,
    calibrate_graph,
    graph_outputs,
)
from hetexport.calibration.conformal import ConformalMethod
from hetexport.data import load_fashion_mnist, normalize
from hetexport.label_noise import DEFAULT_NOISE_RATE, inject_label_noise
from hetexport.studies.demo import demo_calibration
from hetexport.training.experiment import prepare_fashion_mnist
from provenance import write_result
from scipy.ndimage import gaussian_filter

REPO_ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MODELS = {"fashion_het": True, "fashion_det": False}
"""Model name -> heteroscedastic head."""
SHIFTS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.1, 0.2, 0.3),
    "blur": (0.5, 1.0, 1.5),
    "low_contrast": (0.6, 0.4, 0.2),
}
ATC_SCORES = ("top_ratio", "max_probability", "negative_entropy")
"""The served ATC score (the calibration's default) first, then Garg et al.'s ATC-MC and
ATC-NE for comparison."""
COVERAGE_TOLERANCE = 0.015
TARGET_RISK = 0.05
RISK_SPLIT_SHARE = 0.9
ATC_IN_DISTRIBUTION = 0.03
ATC_UNDER_SHIFT = 0.05
GATEWAY_BUDGET_MS = 0.02
NOISE_Z = 1.645
"""A diagnostic beside the risk target: a split's realised risk is over r "beyond the test
set's own noise" when it exceeds r by more than 1.645 binomial standard errors of r on its
accepted test images (one-sided 95 %). The guarantee is about the risk on new images drawn
like the calibration ones; a finite test split adds its own sampling error on top."""
TEST_NOISE_SEED = 1
"""Seed of the label noise put on the test labels (the training labels used seed 0)."""
MEASURED = ["model_repo/fashion_het", "model_repo/fashion_det",
            "contract/src/hetcontract/decision_scores.py",
            "contract/src/hetcontract/calibration.py", "export/src/hetexport/calibration",
            "server/src/hetgateway/answer.py", "server/src/hetgateway/decisions.py",
            "server/src/hetgateway/accuracy_monitor.py", "server/src/hetgateway/metrics.py",
            "server/src/hetgateway/triton_backend.py", "export/src/hetexport/studies/demo.py",
            "bench/decisions.py"]


def main() -> int:
    args = parse_args()
    torch.set_num_threads(2)
    if args.cost_only:  # the child process of gateway_cost, metrics in files
        print(json.dumps(measure_gateway_cost(args.model_repo / "fashion_het",
                                              args.cost_repeats)))
        return 0
    test = load_fashion_mnist(FASHION_MNIST_DIR, split="test")
    labels = test.labels.numpy()
    noisy_test_labels = inject_label_noise(test.images, test.labels, num_classes=10,
                                           rate=DEFAULT_NOISE_RATE,
                                           seed=TEST_NOISE_SEED).noisy_labels.numpy()
    demo = prepare_fashion_mnist(FASHION_MNIST_DIR, noise_rate=DEFAULT_NOISE_RATE)
    pixels = test.images.numpy().astype(np.float64)
    report: dict[str, Any] = {
        "splits": args.splits, "calibration_images": args.calibration_images,
        "test_images": len(labels) - args.calibration_images, "shifts": SHIFTS,
        "test_noise": {"rate": DEFAULT_NOISE_RATE, "seed": TEST_NOISE_SEED,
                       "flipped": float(np.mean(noisy_test_labels != labels))},
        "models": {},
    }
    for name, heteroscedastic in MODELS.items():
        started = time.perf_counter()
        model_dir = args.model_repo / name
        card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
        onnx = model_dir / "1" / "model.onnx"
        clean = model_outputs(onnx, card, pixels)
        shifted = {f"{kind}_{strength:g}": model_outputs(onnx, card, shift(pixels, kind, strength))
                   for kind, strengths in SHIFTS.items() for strength in strengths}
        noisy_section, noisy_origin = export_calibration(card, onnx, demo, heteroscedastic)
        report["models"][name] = {
            "clean_splits": clean_splits(clean, shifted, labels, heteroscedastic, args),
            "noisy_calibration": {
                "origin": noisy_origin,
                "calibration_images": noisy_section.images,
                "clean_test": evaluate(noisy_section, clean, labels),
                "noisy_test": evaluate(noisy_section, clean, noisy_test_labels),
                "atc_under_shift": {
                    shift_name: atc_error(noisy_section, outputs, labels)
                    for shift_name, outputs in shifted.items()},
            },
            "seconds": time.perf_counter() - started,
        }
        print(f"{name}: evaluated in {time.perf_counter() - started:.0f} s", flush=True)
    report["gateway_cost"] = gateway_cost(args.model_repo / "fashion_het", args.cost_repeats)
    report["targets"] = targets(report)
    print_report(report)
    write_result(report, "decisions", measures=MEASURED)
    return 0


def model_outputs(onnx: Path, card: ModelCard, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The exported graph's outputs on pixels [N, 1, H, W] in 0..255 (normalised per card)."""
    images = normalize(torch.from_numpy(pixels.astype(np.float32)), card.input)
    return graph_outputs(onnx, images.numpy())


def shift(pixels: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """Pixels [N, 1, H, W] in 0..255 under one shift, clipped back to 0..255."""
    if kind == "gaussian_noise":
        rng = np.random.default_rng(int(strength * 1000))
        shifted = pixels + rng.normal(0.0, strength * 255.0, size=pixels.shape)
    elif kind == "blur":
        shifted = gaussian_filter(pixels, sigma=(0, 0, strength, strength))
    elif kind == "low_contrast":
        mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
        shifted = mean + strength * (pixels - mean)
    else:
        raise ValueError(kind)
    return np.clip(shifted, 0.0, 255.0)


def export_calibration(card: ModelCard, onnx: Path, demo: Any,
                       heteroscedastic: bool) -> tuple[Calibration, str]:
    """The exported card's noisy-label calibration, or the same computation on the demo's
    held-out noisy validation split when the card has none."""
    if card.calibration is not None and card.calibration.label_source == "noisy":
        return card.calibration, "model card"
    held_out = demo_calibration(demo, noise_rate=DEFAULT_NOISE_RATE)
    section = calibrate_graph(onnx, held_out, heteroscedastic=heteroscedastic)
    return section, "computed as the demo's export does (the card has no calibration)"


def subset(outputs: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: value[index] for name, value in outputs.items()}


def top1_wrong(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    return outputs[OutputName.TOPK_IDS.value][:, 0] != labels


def evaluate(section: Calibration, outputs: Mapping[str, np.ndarray],
             labels: np.ndarray) -> dict[str, Any]:
    """The served decisions of ``section`` on labelled outputs: per coverage the set's
    coverage and mean size, per risk the realised risk and accepted fraction, ATC's error."""
    probs = outputs[OutputName.PROBS.value]
    sets = {}
    for coverage in section.prediction_sets.coverages:
        row = section.prediction_sets.chosen(coverage)
        member = set_membership(probs, row)
        sets[f"{coverage:g}"] = {
            "method": row.method + ("_class_conditional" if row.class_conditional else ""),
            "coverage": float(member[np.arange(len(labels)), labels].mean()),
            "mean_size": float(member.sum(axis=1).mean()),
            "empty": float(np.mean(member.sum(axis=1) == 0)),
        }
    wrong = top1_wrong(outputs, labels)
    risks = {}
    for rule in section.abstention.levels:
        accept = accepted(outputs, rule)
        realised = float(wrong[accept].mean()) if accept.any() else 0.0
        kept = int(accept.sum())
        risks[f"{rule.risk:g}"] = {
            "score": rule.score,
            "accepted": float(accept.mean()),
            "accepted_images": kept,
            "realised_risk": realised,
            # the test images' own sampling error of that risk, were it exactly r
            "test_noise": float(np.sqrt(rule.risk * (1 - rule.risk) / kept)) if kept else 0.0,
        }
    return {"accuracy": float(np.mean(~wrong)), "sets": sets, "abstention": risks,
            "atc": atc_error(section, outputs, labels)}


def atc_error(section: Calibration, outputs: Mapping[str, np.ndarray],
              labels: np.ndarray) -> dict[str, float]:
    estimate = section.accuracy_estimate
    value = atc_estimate(confidence(outputs, estimate.score), estimate.threshold)
    true = float(np.mean(~top1_wrong(outputs, labels)))
    return {"estimate": value, "true": true, "error": value - true}


def clean_splits(clean: Mapping[str, np.ndarray], shifted: Mapping[str, Mapping],
                 labels: np.ndarray, heteroscedastic: bool,
                 args: argparse.Namespace) -> dict[str, Any]:
    """Section 1 of the module doc, summarised over the splits."""
    per_split = []
    for split in range(args.splits):
        order = np.random.default_rng(split).permutation(len(labels))
        cal, test = order[:args.calibration_images], order[args.calibration_images:]
        section = calibrate(subset(clean, cal), labels[cal], heteroscedastic=heteroscedastic,
                            label_source="clean", config=CalibrationConfig(seed=split))
        test_outputs = subset(clean, test)
        result = evaluate(section, test_outputs, labels[test])
        result["methods"] = method_table(section, test_outputs, labels[test])
        result["atc_scores"] = {
            score: atc_scores(score, subset(clean, cal), labels[cal], test_outputs,
                              {name: subset(o, test) for name, o in shifted.items()},
                              labels[test])
            for score in ATC_SCORES}
        per_split.append(result)
    return summarise(per_split)


def method_table(section: Calibration, outputs: Mapping[str, np.ndarray],
                 labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Every calibrated method's test coverage and mean set size, by coverage level."""
    probs = outputs[OutputName.PROBS.value]
    table: dict[str, dict[str, float]] = {}
    for row in section.prediction_sets.table:
        method = ConformalMethod(row.method, row.class_conditional, row.penalty, row.k_reg)
        member = set_membership(probs, row)
        key = f"{row.coverage:g}/{method.method}{'_cc' if row.class_conditional else ''}"
        table[key] = {"coverage": float(member[np.arange(len(labels)), labels].mean()),
                      "mean_size": float(member.sum(axis=1).mean())}
    return table


def atc_scores(score: str, cal: Mapping[str, np.ndarray], cal_labels: np.ndarray,
               test: Mapping[str, np.ndarray], shifted: Mapping[str, Mapping],
               labels: np.ndarray) -> dict[str, float]:
    """ATC with ``score``, its threshold from the calibration part: the error of the estimate
    on the clean test part and on each shift of it."""
    threshold = atc_threshold(confidence(cal, score), ~top1_wrong(cal, cal_labels))

    def error(outputs: Mapping[str, np.ndarray]) -> float:
        true = float(np.mean(~top1_wrong(outputs, labels)))
        return atc_estimate(confidence(outputs, score), threshold) - true

    return {"in_distribution": error(test),
            **{name: error(outputs) for name, outputs in shifted.items()}}


def summarise(per_split: list[dict[str, Any]]) -> dict[str, Any]:
    """Means, 5th percentiles and shares over the splits."""
    def values(path: Callable[[dict], float]) -> np.ndarray:
        return np.array([path(result) for result in per_split])

    first = per_split[0]
    sets = {}
    for level in first["sets"]:
        coverage = values(lambda r, lv=level: r["sets"][lv]["coverage"])
        sizes = values(lambda r, lv=level: r["sets"][lv]["mean_size"])
        methods = [r["sets"][level]["method"] for r in per_split]
        sets[level] = {"coverage_mean": float(coverage.mean()),
                       "coverage_p5": float(np.percentile(coverage, 5)),
                       "coverage_min": float(coverage.min()),
                       "mean_size": float(sizes.mean()),
                       "methods_chosen": {m: methods.count(m) for m in sorted(set(methods))}}
    risks = {}
    for level in first["abstention"]:
        realised = values(lambda r, lv=level: r["abstention"][lv]["realised_risk"])
        accepted_share = values(lambda r, lv=level: r["abstention"][lv]["accepted"])
        scores = [r["abstention"][level]["score"] for r in per_split]
        noise = values(lambda r, lv=level: r["abstention"][lv]["test_noise"])
        risks[level] = {"realised_risk_mean": float(realised.mean()),
                        "realised_risk_p95": float(np.percentile(realised, 95)),
                        "splits_within_risk": float(np.mean(realised <= float(level))),
                        "splits_within_risk_up_to_test_noise": float(np.mean(
                            realised <= float(level) + NOISE_Z * noise)),
                        "test_noise_mean": float(noise.mean()),
                        "accepted_mean": float(accepted_share.mean()),
                        "scores_chosen": {s: scores.count(s) for s in sorted(set(scores))}}
    methods = {key: {"coverage_mean": float(values(lambda r, k=key: r["methods"][k]["coverage"])
                                            .mean()),
                     "mean_size": float(values(lambda r, k=key: r["methods"][k]["mean_size"])
                                        .mean())}
               for key in first["methods"] if all(key in r["methods"] for r in per_split)}
    atc = {score: {name: float(np.mean(np.abs(values(
        lambda r, s=score, n=name: r["atc_scores"][s][n]))))
        for name in first["atc_scores"][score]} for score in first["atc_scores"]}
    return {"accuracy_mean": float(values(lambda r: r["accuracy"]).mean()), "sets": sets,
            "abstention": risks, "methods": methods, "atc_mean_absolute_error": atc}


COST_BATCHES = (1, 16)
COST_BLOCKS = 15


def gateway_cost(model_dir: Path, repeats: int) -> dict[str, Any]:
    """Section 4 of the module doc, with the metrics in memory (one worker) and in files
    (``PROMETHEUS_MULTIPROC_DIR``, several workers: measured in a child process, since
    prometheus_client picks its value store when it is first imported)."""
    in_memory = measure_gateway_cost(model_dir, repeats)
    with tempfile.TemporaryDirectory(prefix="hetserve-decisions-metrics-") as directory:
        child = subprocess.run(
            [sys.executable, __file__, "--cost-only", "--model-repo", str(model_dir.parent),
             "--cost-repeats", str(repeats)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}, check=True,
            capture_output=True, text=True)
    return {"metrics_in_memory": in_memory,
            "metrics_in_files": json.loads(child.stdout.strip().splitlines()[-1])}


def measure_gateway_cost(model_dir: Path, repeats: int) -> dict[str, Any]:
    """CPU seconds per request of the answer path with and without decisions: decoding
    Triton's response (with the extra ``probs`` output when calibrated), checking the levels,
    deciding, updating the accuracy window and its gauges, laying out and encoding the JSON
    answer. Medians over blocks of ``repeats`` calls (``time.process_time``)."""
    from hetgateway.accuracy_monitor import AccuracyMonitor
    from hetgateway.decisions import DecisionTable
    from hetgateway.metrics import GatewayMetrics

    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
    if card.calibration is None:  # calibrate it the way the export does
        demo = prepare_fashion_mnist(FASHION_MNIST_DIR, noise_rate=DEFAULT_NOISE_RATE)
        section, _ = export_calibration(card, model_dir / "1" / "model.onnx", demo, True)
        card = card.model_copy(update={"calibration": section})
    table = DecisionTable.from_card(card)
    assert table is not None
    test = load_fashion_mnist(FASHION_MNIST_DIR, split="test")
    outputs = model_outputs(model_dir / "1" / "model.onnx", card,
                            test.images[:max(COST_BATCHES)].numpy())
    monitor = AccuracyMonitor(GatewayMetrics())
    figures = {}
    for batch in COST_BATCHES:
        rows = {name: value[:batch] for name, value in outputs.items()}
        with_decisions, without_decisions = answer_paths(card, table, rows, monitor)
        with_s = cpu_per_call(with_decisions, repeats)
        without_s = cpu_per_call(without_decisions, repeats)
        figures[str(batch)] = {
            "with_decisions_ms": 1e3 * with_s, "without_ms": 1e3 * without_s,
            "added_ms_per_request": 1e3 * (with_s - without_s),
            "added_ms_per_image": 1e3 * (with_s - without_s) / batch,
            "answer_bytes_with": len(with_decisions()),
            "answer_bytes_without": len(without_decisions()),
        }
    return figures


def answer_paths(card: ModelCard, table: Any, rows: Mapping[str, np.ndarray],
                 monitor: Any) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    """The gateway's answer path for ``rows`` (one request's graph outputs) with the card's
    decisions and without them (the card less its calibration), as the data plane runs it."""
    from hetgateway.answer import ANSWER_OUTPUTS, answer_json, answer_outputs, result_layouts
    from hetgateway.decisions import resolve_levels
    from hetgateway.triton_backend import outputs_by_name

    plain = card.model_copy(update={"calibration": None})
    served = {"name": card.name, "version": "1", "num_classes": card.num_classes,
              "mc_samples": card.mc_samples, "temperature": card.temperature}
    full, bare = answer_outputs(table), ANSWER_OUTPUTS
    with_response, without_response = triton_response(rows, full), triton_response(rows, bare)

    def with_decisions() -> bytes:
        got = outputs_by_name(with_response, full, model=card.name)
        resolve_levels(card.name, table, coverage=None, risk=None)  # before inference
        levels = resolve_levels(card.name, table, coverage=None, risk=None)  # after
        decided = table.decide(got, levels)
        monitor.observe(card.name, decided.confident,
                        calibrated_accuracy=table.calibrated_accuracy)
        return answer_json(served, result_layouts(got, card, top_k=5, decided=decided),
                           request_id="r")

    def without_decisions() -> bytes:
        got = outputs_by_name(without_response, bare, model=plain.name)
        resolve_levels(plain.name, None, coverage=None, risk=None)
        resolve_levels(plain.name, None, coverage=None, risk=None)
        return answer_json(served, result_layouts(got, plain, top_k=5), request_id="r")

    return with_decisions, without_decisions


def triton_response(outputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> Any:
    """A ``ModelInferResponse`` holding ``outputs[names]`` as Triton sends them."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import np_to_triton_dtype

    response = service_pb2.ModelInferResponse(model_name="m", model_version="1")
    for name in names:
        value = np.ascontiguousarray(outputs[name])
        response.outputs.add(name=name, datatype=np_to_triton_dtype(value.dtype),
                             shape=list(value.shape))
        response.raw_output_contents.append(value.tobytes())
    return response


def cpu_per_call(call: Callable[[], Any], repeats: int) -> float:
    """Median over ``COST_BLOCKS`` blocks of the process CPU seconds per call (after a
    warm-up block), calls alternating with nothing else."""
    for _ in range(repeats):
        call()
    blocks = []
    for _ in range(COST_BLOCKS):
        started = time.process_time()
        for _ in range(repeats):
            call()
        blocks.append((time.process_time() - started) / repeats)
    return float(np.median(blocks))


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Each target's figure, its comparison and whether it is met."""
    het = report["models"]["fashion_het"]["clean_splits"]
    det = report["models"]["fashion_det"]["clean_splits"]
    levels = list(het["sets"])
    coverage_gap = {name: {lv: abs(m["clean_splits"]["sets"][lv]["coverage_mean"] - float(lv))
                           for lv in levels}
                    for name, m in report["models"].items()}
    risk = f"{TARGET_RISK:g}"
    atc = {name: m["clean_splits"]["atc_mean_absolute_error"][ATC_SCORES[0]]
           for name, m in report["models"].items()}
    return {
        "coverage_within_1.5_points": {
            "figures": coverage_gap,
            "met": all(gap <= COVERAGE_TOLERANCE for gaps in coverage_gap.values()
                       for gap in gaps.values())},
        "het_set_size_not_above_plain": {
            "figures": {lv: [het["sets"][lv]["mean_size"], det["sets"][lv]["mean_size"]]
                        for lv in levels},
            "met": all(het["sets"][lv]["mean_size"] <= det["sets"][lv]["mean_size"]
                       for lv in levels)},
        "risk_5pct_in_90pct_of_splits": {
            "figures": {name: m["clean_splits"]["abstention"][risk]["splits_within_risk"]
                        for name, m in report["models"].items()},
            "met": all(m["clean_splits"]["abstention"][risk]["splits_within_risk"]
                       >= RISK_SPLIT_SHARE for m in report["models"].values())},
        "het_accepts_at_least_plain_at_5pct": {
            "figures": [het["abstention"][risk]["accepted_mean"],
                        det["abstention"][risk]["accepted_mean"]],
            "met": het["abstention"][risk]["accepted_mean"]
            >= det["abstention"][risk]["accepted_mean"]},
        "atc_within_3_points_in_distribution": {
            "figures": {name: errors["in_distribution"] for name, errors in atc.items()},
            "met": all(e["in_distribution"] <= ATC_IN_DISTRIBUTION for e in atc.values())},
        **{f"gateway_cpu_at_most_0.02_ms_per_request_batch_{batch}": {
            "figures": {mode: rows[batch]["added_ms_per_request"]
                        for mode, rows in report["gateway_cost"].items()},
            "met": all(rows[batch]["added_ms_per_request"] <= GATEWAY_BUDGET_MS
                       for rows in report["gateway_cost"].values())}
           for batch in map(str, COST_BATCHES)},
        "atc_within_5_points_under_every_shift": {
            "figures": {name: {k: v for k, v in errors.items() if k != "in_distribution"}
                        for name, errors in atc.items()},
            "met": all(v <= ATC_UNDER_SHIFT for e in atc.values()
                       for k, v in e.items() if k != "in_distribution")},
    }


def print_report(report: dict[str, Any]) -> None:
    for name, model in report["models"].items():
        splits = model["clean_splits"]
        noisy = model["noisy_calibration"]
        print(f"\n== {name}: {report['splits']} clean splits "
              f"({report['calibration_images']} calibration / {report['test_images']} test), "
              f"accuracy {splits['accuracy_mean']:.4f}")
        print("coverage  served(mean, p5)   size   | noisy-cal: clean cov  size  noisy cov")
        for level, row in splits["sets"].items():
            clean_row = noisy["clean_test"]["sets"][level]
            noisy_row = noisy["noisy_test"]["sets"][level]
            print(f"  {level:6s}  {row['coverage_mean']:.4f} {row['coverage_p5']:.4f}  "
                  f"{row['mean_size']:.3f}  | {clean_row['coverage']:.4f}  "
                  f"{clean_row['mean_size']:.3f}  {noisy_row['coverage']:.4f}  "
                  f"{row['methods_chosen']}")
        print("risk   realised(mean, p95)  within (up to test noise)  accepted | noisy-cal: "
              "clean risk  accepted")
        for level, row in splits["abstention"].items():
            noisy_row = noisy["clean_test"]["abstention"][level]
            print(f"  {level:5s} {row['realised_risk_mean']:.4f} {row['realised_risk_p95']:.4f}"
                  f"  {row['splits_within_risk']:.2f} "
                  f"({row['splits_within_risk_up_to_test_noise']:.2f})"
                  f"   {row['accepted_mean']:.4f} | "
                  f"{noisy_row['realised_risk']:.4f}  {noisy_row['accepted']:.4f}  "
                  f"{row['scores_chosen']}")
        print("ATC mean |error| (points):")
        for score, errors in splits["atc_mean_absolute_error"].items():
            print(f"  {score}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in errors.items()))
        print(f"  noisy-cal card: clean test error "
              f"{100 * noisy['clean_test']['atc']['error']:+.2f}, noisy test error "
              f"{100 * noisy['noisy_test']['atc']['error']:+.2f}")
    print("\ngateway CPU per request (ms): with decisions / without / added")
    for mode, rows in report["gateway_cost"].items():
        for batch, row in rows.items():
            print(f"  {mode}, batch {batch}: {row['with_decisions_ms']:.4f} / "
                  f"{row['without_ms']:.4f} / {row['added_ms_per_request']:+.4f} "
                  f"({row['added_ms_per_image']:+.4f} per image)")
    print("\nTargets:")
    for name, target in report["targets"].items():
        print(f"  {name}: {'met' if target['met'] else 'MISSED'}  {target['figures']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--calibration-images", type=int, default=5000)
    parser.add_argument("--model-repo", type=Path, default=REPO_ROOT / "model_repo")
    parser.add_argument("--cost-repeats", type=int, default=2000)
    parser.add_argument("--cost-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
