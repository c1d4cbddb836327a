"""What uncertainty costs: the HET model against the plain one through Triton, and how exact
the HET head's numbers are for that cost.

Three sections (``--sections cost error imagenet``, all by default):

- ``cost``: the embedded Triton (repository derived from ``model_repo/`` as ``make serve``
  does) serves ``fashion_het`` and ``fashion_det``; the same preprocessed Fashion-MNIST test
  tensors go to both with ``tritonclient.grpc.aio`` at a fixed concurrency, in alternating
  rounds (het, det, het, det, ...) at batch 1 and 32. Per model and batch: throughput
  (images/s), p50/p99 latency, and Triton's CPU milliseconds per image (Triton with its
  Python-backend stubs, from /proc). The HET/det cost ratio is reported two ways: the median
  of the paired round ratios det throughput / het throughput (what a client sees on this
  machine), and Triton CPU per image het / det (what the head costs in cores, robust to other
  work on a shared machine). Targets: <= 1.20 at batch 32, <= 1.10 at batch 1.
- ``error``: against the exact integral (``hetexport.exact``: randomized QMC, 2^18 points, with
  its own standard error), the mean and 99th percentile over ``--images`` test images of every
  served quantity's error, for the bank the models were shipped with before (plain Monte
  Carlo, S = 1000), plain Monte Carlo at S = 128, each Sobol design at S = 128 (seed 0), the
  moment-matched design at S = 256 (the bank shipped before), and the bank in the shipped
  ``fashion_het`` (its ONNX graph run with ONNX Runtime: S = 128 points fitted by the export
  to the latents of other test images, ``hetexport.exact.bank_fit``).
  Needs the model's checkpoint (``make models`` leaves it in ``runs/demo/fashion_het.pt``) for
  the latent Gaussians.

- ``imagenet``: ImageNet-sized models in ONNX Runtime (no Triton): a torchvision ResNet-18 and
  ResNet-50 at 224 x 224 with K = 1000 classes (random weights: the cost does not depend on
  them), a HET head and a plain one on the same backbone, each exported with the exporter's
  defaults (``export_to_repository`` without held-out images: S and the bank design it picks).
  Per architecture, ONNX Runtime threads (1, 2) and batch (1, 8): time per image of each, in
  alternating rounds, and HET / plain as the median of the paired round ratios. Target: <= 1.05.

Reproduce: ``.venv/bin/python bench/uncertainty_cost.py`` (``make bench-uncertainty``);
results in ``bench/results/uncertainty-cost.json`` with their provenance (each section keeps
the provenance of the run that measured it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import tritonclient.grpc.aio as grpcaio
from hetcontract import INPUT_NAME, MODEL_CARD_FILENAME, InputSpec, ModelCard
from hetexport.checkpoint import load_checkpoint
from hetexport.exact.measure import head_error, reference_for
from hetexport.layers import NoiseBank
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.export import export_to_repository
from hetexport.onnx.runner import OnnxRunner
from hetgateway.answer import ANSWER_OUTPUTS
from loopback_target import (
    embedded_triton,
    fashion_images,
    load,
    percentiles_ms,
    preprocess,
    process_group_cpu_s,
)
from provenance import RESULTS_DIR, provenance
from tritonclient.grpc import InferInput, InferRequestedOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("fashion_het", "fashion_det")
BATCH_SIZES = (1, 32)
TARGETS = {1: 1.10, 32: 1.20}
NUM_TENSORS = 256
WARMUP_REQUESTS = 40
CLIENT_TIMEOUT_S = 60
DESIGNS_AT_128 = ("normal", "sobol", "antithetic_sobol", "moment_matched_sobol")
PREVIOUS_BANK = ("normal", 1000)
LARGER_BANK = ("moment_matched_sobol", 256)
MEASURED = [
    "model_repo/fashion_het", "model_repo/fashion_det", "export/src/hetexport/exact",
    "export/src/hetexport/onnx", "export/src/hetexport/serving", "export/src/hetexport/layers",
    "export/src/hetexport/class_correlation.py", "server/src/hetgateway/embedded/ort_model.py",
    "server/src/hetgateway/embedded/repository.py", "bench/uncertainty_cost.py",
]
"""What the figures depend on: the models, the head's code, the Triton wrapper that runs the
ONNX graph, and this script."""


def main() -> int:
    args = parse_args()
    output = RESULTS_DIR / "uncertainty-cost.json"
    report = json.loads(output.read_text()) if output.exists() else {}
    run = provenance(MEASURED)
    report["provenance"] = run
    if "cost" in args.sections:
        report["cost"] = {**measure_cost(args), "provenance": run}
    if "error" in args.sections:
        report["error"] = {**measure_error(args), "provenance": run}
    if "imagenet" in args.sections:
        report["imagenet"] = {**measure_imagenet(args), "provenance": run}
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output.relative_to(REPO_ROOT)}")
    return 0


# ---- cost -------------------------------------------------------------------------------------


def measure_cost(args: argparse.Namespace) -> dict:
    repository = Path(args.model_repository)
    cards = {m: ModelCard.model_validate_json((repository / m / MODEL_CARD_FILENAME).read_text())
             for m in MODELS}
    tensors = preprocess(fashion_images(limit=NUM_TENSORS), cards[MODELS[0]])
    with (tempfile.TemporaryDirectory(prefix="hetserve-uncertainty-") as tmp,
          embedded_triton(repository, Path(tmp)) as triton):
        rounds = asyncio.run(run_rounds(args, triton.grpc_url, tensors, triton.pid))
    points = [cost_point(batch, [r for r in rounds if r["batch"] == batch])
              for batch in args.batch_sizes]
    for point in points:
        print(f"batch {point['batch']:3d}: het {point['fashion_het']['images_per_s']:8.0f} img/s, "
              f"det {point['fashion_det']['images_per_s']:8.0f} img/s; HET/det cost "
              f"{point['cost_ratio']:.2f} (throughput), {point['cpu_cost_ratio']:.2f} (Triton CPU)"
              f"; target <= {point['target']:.2f}")
    return {"concurrency": args.concurrency, "requests_per_round": args.requests,
            "rounds_per_model": args.rounds, "models": {m: _card_summary(cards[m]) for m in MODELS},
            "points": points, "load_average_1m": os.getloadavg()[0]}


async def run_rounds(args, grpc_url: str, tensors: np.ndarray, triton_pid: int) -> list[dict]:
    """Warm-up, then het and det rounds alternating, per batch size."""
    outputs = [InferRequestedOutput(name) for name in ANSWER_OUTPUTS]
    triton = grpcaio.InferenceServerClient(grpc_url)
    rounds: list[dict] = []
    try:
        for batch in args.batch_sizes:
            batches = [tensors[[(first + j) % len(tensors) for j in range(batch)]]
                       for first in range(len(tensors))]

            def sender(model: str, batches=batches):
                async def send(i: int) -> None:
                    tensor = batches[i % len(batches)]
                    infer_input = InferInput(INPUT_NAME, list(tensor.shape), "FP32")
                    infer_input.set_data_from_numpy(tensor)
                    await triton.infer(model, [infer_input], outputs=outputs,
                                       client_timeout=CLIENT_TIMEOUT_S)
                return send

            for model in MODELS:
                await load(sender(model), WARMUP_REQUESTS, args.concurrency)
            for _ in range(args.rounds):
                for model in MODELS:
                    cpu_before = process_group_cpu_s(triton_pid)
                    seconds, latencies = await load(sender(model), args.requests,
                                                    args.concurrency)
                    cpu_s = process_group_cpu_s(triton_pid) - cpu_before
                    rounds.append(_round(model, batch, seconds, latencies, cpu_s))
                    print(f"  batch {batch:3d} {model:12s} {rounds[-1]['images_per_s']:9.1f} img/s")
        return rounds
    finally:
        await triton.close()


def _round(model: str, batch: int, seconds: float, latencies: list[float], cpu_s: float) -> dict:
    p = percentiles_ms(latencies)
    images = batch * len(latencies)
    return {"model": model, "batch": batch, "images_per_s": images / seconds, "p50_ms": p.p50,
            "p99_ms": p.p99, "triton_cpu_ms_per_image": 1000 * cpu_s / images}


def cost_point(batch: int, rounds: list[dict]) -> dict:
    """Medians per model; the cost ratio as the median of paired (det / het) round ratios."""
    by_model = {m: [r for r in rounds if r["model"] == m] for m in MODELS}

    def median(model: str, key: str) -> float:
        return float(np.median([r[key] for r in by_model[model]]))

    paired = [d["images_per_s"] / h["images_per_s"]
              for h, d in zip(by_model["fashion_het"], by_model["fashion_det"], strict=True)]
    summary = {m: {k: median(m, k) for k in ("images_per_s", "p50_ms", "p99_ms",
                                             "triton_cpu_ms_per_image")} for m in MODELS}
    cpu_ratio = (summary["fashion_het"]["triton_cpu_ms_per_image"]
                 / summary["fashion_det"]["triton_cpu_ms_per_image"])
    ratio = float(np.median(paired))
    return {"batch": batch, **summary, "cost_ratio": ratio, "paired_cost_ratios": paired,
            "cpu_cost_ratio": cpu_ratio, "target": TARGETS.get(batch),
            "meets_target": ratio <= TARGETS.get(batch, float("inf")),
            "meets_target_cpu": cpu_ratio <= TARGETS.get(batch, float("inf"))}


def _card_summary(card: ModelCard) -> dict:
    mc = card.monte_carlo
    return {"head": card.head, "mc_samples": card.mc_samples,
            "design": mc.design if mc else None}


# ---- error ------------------------------------------------------------------------------------


def measure_error(args: argparse.Namespace) -> dict:
    """Every served quantity's error against the exact integral, per bank (module doc)."""
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.model.eval()
    head = model.head
    card = ModelCard.model_validate_json(
        (Path(args.model_repository) / "fashion_het" / MODEL_CARD_FILENAME).read_text())
    images = torch.from_numpy(preprocess(
        fashion_images(limit=args.error_offset + args.images), card)[args.error_offset:])
    started = time.perf_counter()
    reference = reference_for(model, images)
    largest = max(float(v.max()) for v in reference.exact.standard_error.values())
    print(f"reference: {args.images} images in {time.perf_counter() - started:.0f} s, "
          f"largest standard error {largest:.1e}")
    rows = []
    banks = [PREVIOUS_BANK, *((design, 128) for design in DESIGNS_AT_128), LARGER_BANK]
    for design, samples in banks:
        bank = NoiseBank.fixed(samples, head.num_factors, head.diag_noise_dim, seed=0,
                               design=design)
        report = head_error(model, images, reference, bank=bank, top_k=card.top_k,
                            num_confusable=card.num_confusable)
        rows.append(_error_row(f"{design}, S = {samples}", design, samples, report))
    runner = OnnxRunner(Path(args.model_repository) / "fashion_het" / "1" / "model.onnx")
    served = runner.run(images.numpy())
    shipped = card.monte_carlo
    report = head_error(model, images, reference, served=served)
    rows.append(_error_row(f"shipped fashion_het ({shipped.design if shipped else 'normal'}, "
                           f"S = {card.mc_samples}, ONNX Runtime)",
                           shipped.design if shipped else "normal", card.mc_samples, report))
    for row in rows:
        e = row["error"]
        print(f"{row['bank']:42s} p_bar {e['probs']['mean']:.1e}/{e['probs']['p99']:.1e}  "
              f"H p99 {e['predictive_entropy']['p99']:.1e}  "
              f"E[H] p99 {e['expected_entropy']['p99']:.1e}  "
              f"MI p99 {e['mutual_information']['p99']:.1e}  "
              f"share p99 {e['confusable_share']['p99']:.1e} "
              f"(withheld {row['shares_withheld']:.1%})")
    return {"images": args.images, "first_image": args.error_offset,
            "reference": reference.description,
            "reference_standard_error": {k: float(v.max()) for k, v in
                                         reference.exact.standard_error.items()},
            "checkpoint": str(args.checkpoint), "banks": rows}


def _error_row(name: str, design: str, samples: int, report) -> dict:
    """One bank's errors; ``shares_withheld``: the fraction of moving top classes whose shares
    the head withheld (the share error is over the others, so read the two together)."""
    return {"bank": name, "design": design, "samples": samples, "error": report.summary(),
            "shares_withheld": report.shares_withheld}


# ---- imagenet ---------------------------------------------------------------------------------


IMAGENET_ARCHITECTURES = ("resnet18", "resnet50")
IMAGENET_CLASSES = 1000
IMAGENET_INPUT = InputSpec(shape=(3, 224, 224), mean=(0.485, 0.456, 0.406),
                           std=(0.229, 0.224, 0.225), channel_order="RGB")
IMAGENET_BATCHES = (1, 8)
IMAGENET_THREADS = (1, 2)
IMAGENET_TARGET = 1.05


def measure_imagenet(args: argparse.Namespace) -> dict:
    """HET / plain per image in ONNX Runtime for ImageNet-sized models (module doc)."""
    rows, exported = [], {}
    images = np.random.default_rng(0).standard_normal(
        (max(IMAGENET_BATCHES), *IMAGENET_INPUT.shape)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="hetserve-imagenet-") as tmp:
        for arch in args.imagenet_architectures:
            paths = {}
            for head in ("het", "det"):
                torch.manual_seed(0)  # the same backbone weights under both heads
                spec = ModelSpec(num_classes=IMAGENET_CLASSES, head=head,
                                 backbone=f"torchvision:{arch}", input=IMAGENET_INPUT)
                report = export_to_repository(build_model(spec).eval(), tmp, f"{arch}_{head}")
                paths[head] = report.onnx_path
                mc = report.card.monte_carlo
                exported[f"{arch}_{head}"] = {"mc_samples": report.card.mc_samples,
                                              "design": mc.design if mc else None,
                                              "onnx_bytes": report.onnx_bytes}
            het = exported[f"{arch}_het"]
            print(f"{arch}: exported with the defaults, HET S = {het['mc_samples']} "
                  f"({het['design']})", flush=True)
            for threads in IMAGENET_THREADS:
                sessions = {head: _session(path, threads) for head, path in paths.items()}
                for batch in IMAGENET_BATCHES:
                    rows.append(_imagenet_point(arch, threads, batch, sessions,
                                                images[:batch], args.imagenet_rounds))
    return {"classes": IMAGENET_CLASSES, "input": list(IMAGENET_INPUT.shape),
            "rounds": args.imagenet_rounds, "target": IMAGENET_TARGET, "models": exported,
            "points": rows, "load_average_1m": os.getloadavg()[0]}


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _imagenet_point(arch: str, threads: int, batch: int, sessions: dict, images: np.ndarray,
                    rounds: int) -> dict:
    """Alternating rounds (het, det, het, ...) of calls; per round the time per image."""
    feed = {INPUT_NAME: images}
    calls = max(1, 8 // batch)
    for session in sessions.values():  # warm-up
        session.run(None, feed)
    per_image: dict[str, list[float]] = {head: [] for head in sessions}
    for _ in range(rounds):
        for head, session in sessions.items():
            start = time.perf_counter()
            for _ in range(calls):
                session.run(None, feed)
            per_image[head].append((time.perf_counter() - start) / (calls * batch))
    ratios = [h / d for h, d in zip(per_image["het"], per_image["det"], strict=True)]
    point = {"architecture": arch, "threads": threads, "batch": batch,
             "het_ms_per_image": 1e3 * float(np.median(per_image["het"])),
             "det_ms_per_image": 1e3 * float(np.median(per_image["det"])),
             "cost_ratio": float(np.median(ratios)), "paired_cost_ratios": ratios,
             "meets_target": float(np.median(ratios)) <= IMAGENET_TARGET}
    print(f"  {arch} threads {threads} batch {batch}: HET {point['het_ms_per_image']:.2f} ms, "
          f"plain {point['det_ms_per_image']:.2f} ms per image; HET/plain "
          f"{point['cost_ratio']:.3f} (target <= {IMAGENET_TARGET})", flush=True)
    return point


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=["cost", "error", "imagenet"],
                        default=["cost", "error", "imagenet"])
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "runs/demo/fashion_het.pt"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per model and batch")
    parser.add_argument("--images", type=int, default=400, help="images for the error table")
    parser.add_argument("--error-offset", type=int, default=9000,
                        help="first test image of the error table (the export measures its "
                             "card's figures on images before this)")
    parser.add_argument("--imagenet-architectures", nargs="+", default=list(IMAGENET_ARCHITECTURES),
                        choices=IMAGENET_ARCHITECTURES)
    parser.add_argument("--imagenet-rounds", type=int, default=9,
                        help="alternating rounds per ImageNet point")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
