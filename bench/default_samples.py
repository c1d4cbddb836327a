"""The default S of an export without held-out images, chosen by a model-free criterion.

Without held-out images the exporter cannot measure its bank on the model's latents, so S must
be chosen before any model is seen. The criterion: the smallest S whose bank (the design
``"auto"`` resolves to at that S: ``moment_matched_sobol``, whitened block by block where the
head has more dimensions than pairs) integrates every served integral (p_bar as the largest
error over classes, the predictive and expected entropy, the mutual information) at least as
exactly as plain Monte Carlo with S = 1000, on a FAMILY of latent Gaussians that depends on no
model: the largest ratio, over those integrals and over their mean and 99th-percentile error
across the family, must be <= 1 at every K measured.

The family, in units of the tempered logits ``x = u / tau`` (where the integrals live), spans
the scales measured on the one trained HET model at hand (the demo, 400 test images: per-class
latent standard deviation 0.9 to 3.8, mostly low-rank; diagonal scale 0.05 to 1.2; spread of
the mean logits 3.7 to 7.6), each cell ``DRAWS`` random latents:

* mean logits ``N(0, s_m^2)``, ``s_m`` in ``MEAN_SCALES``;
* factor loadings ``V = s_v G / sqrt(R)``, G standard normal [K, R], ``s_v`` in ``FACTOR_SCALES``;
* diagonal scale ``d = s_d exp(0.3 g)``, ``s_d`` in ``DIAGONAL_SCALES``.

Each latent's exact integrals come from ``hetexport.exact.integral.exact_answer`` (the
eigenbasis at K = 10, the noise's own coordinates at K = 1000, with their standard errors);
plain Monte Carlo's error is the mean over ``BASELINE_SEEDS`` banks. Reproduce:
``.venv/bin/python bench/default_samples.py`` (``make bench-default-samples``; about six
minutes on two shared cores, most of it the K = 1000 reference); results in
``bench/results/default-samples-<machine>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch
from hetexport.exact.integral import exact_answer
from hetexport.layers import LatentGaussian, NoiseBank, categorical_entropy, mc_softmax
from hetexport.layers.noise_bank import AUTO_DESIGN, resolve_design
from hetexport.onnx.sampling_plan import DEFAULT_EXPORT_MC_SAMPLES
from provenance import write_result

FACTORS = 6
CLASSES = (10, 1000)
MEAN_SCALES = (2.0, 5.0)
FACTOR_SCALES = (0.5, 1.5, 3.0)
DIAGONAL_SCALES = (0.1, 0.3, 1.0)
DRAWS = 2
CANDIDATES = (64, 128, 256, 512)
BASELINE = ("normal", 1000)
BASELINE_SEEDS = 4
QUANTITIES = ("probs", "predictive_entropy", "expected_entropy", "mutual_information")
REFERENCE_POINTS = {10: 1 << 18, 1000: 1 << 17}


def family(classes: int, *, draws: int, seed: int = 0) -> tuple[LatentGaussian, list[dict]]:
    """The model-free latents (module doc), tempered (tau = 1), float64, and each one's cell."""
    generator = torch.Generator().manual_seed(seed)
    means, scales, factors, cells = [], [], [], []
    for s_m, s_v, s_d in itertools.product(MEAN_SCALES, FACTOR_SCALES, DIAGONAL_SCALES):
        for _ in range(draws):
            def normal(*shape: int) -> torch.Tensor:
                return torch.randn(*shape, generator=generator, dtype=torch.float64)

            means.append(s_m * normal(classes))
            factors.append(s_v * normal(classes, FACTORS) / math.sqrt(FACTORS))
            scales.append(s_d * torch.exp(0.3 * normal(classes)))
            cells.append({"mean_scale": s_m, "factor_scale": s_v, "diagonal_scale": s_d})
    return LatentGaussian(torch.stack(means), torch.stack(scales), torch.stack(factors)), cells


def errors(latent: LatentGaussian, exact, bank: NoiseBank, *, chunk: int = 8
           ) -> dict[str, np.ndarray]:
    """Per latent: |bank - exact| of each served integral (p_bar: the largest over classes)."""
    wide = NoiseBank(bank.factor_noise.double(), bank.diag_noise.double())
    probs, expected = [], []
    for start in range(0, latent.batch_size, chunk):
        rows = slice(start, start + chunk)
        part = LatentGaussian(latent.mean[rows], latent.scale[rows], latent.factors[rows])
        average = mc_softmax(part, wide, torch.tensor(1.0, dtype=torch.float64))
        probs.append(average.probs)
        expected.append(average.expected_entropy)
    p, e = torch.cat(probs), torch.cat(expected)
    predictive = categorical_entropy(p.clamp(min=0))
    return {
        "probs": (p - exact.probs).abs().amax(-1).numpy(),
        "predictive_entropy": (predictive - exact.predictive_entropy).abs().numpy(),
        "expected_entropy": (e - exact.expected_entropy).abs().numpy(),
        "mutual_information": ((predictive - e) - exact.mutual_information).abs().numpy(),
    }


def summary(per_latent: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {q: {"mean": float(np.mean(v)), "p99": float(np.percentile(v, 99))}
            for q, v in per_latent.items()}


def worst_ratio(candidate: dict, baseline: dict) -> float:
    """The criterion: the largest error ratio to the baseline over integrals and statistics."""
    return max(candidate[q][stat] / baseline[q][stat]
               for q in QUANTITIES for stat in ("mean", "p99"))


def measure(classes: int, *, draws: int, candidates: tuple[int, ...]) -> dict:
    latent, cells = family(classes, draws=draws)
    started = time.perf_counter()
    exact = exact_answer(latent, 1.0, link="softmax", points=REFERENCE_POINTS[classes])
    reference_s = time.perf_counter() - started
    largest_se = {q: float(exact.standard_error[q].max()) for q in QUANTITIES}
    print(f"K = {classes}: {latent.batch_size} latents, reference in {reference_s:.0f} s, "
          f"largest standard error {max(largest_se.values()):.1e}", flush=True)
    runs = [summary(errors(latent, exact, NoiseBank.fixed(BASELINE[1], FACTORS, classes,
                                                          seed=seed, design=BASELINE[0])))
            for seed in range(BASELINE_SEEDS)]
    baseline = {q: {stat: float(np.mean([r[q][stat] for r in runs])) for stat in ("mean", "p99")}
                for q in QUANTITIES}
    rows = []
    for samples in candidates:
        design = resolve_design(AUTO_DESIGN, samples, FACTORS, classes)
        found = summary(errors(latent, exact, NoiseBank.fixed(samples, FACTORS, classes, seed=0,
                                                              design=design)))
        ratio = worst_ratio(found, baseline)
        rows.append({"samples": samples, "design": design, "error": found,
                     "worst_ratio": ratio, "passes": ratio <= 1.0})
        print(f"  S = {samples:4d} ({design}): worst ratio to plain S = 1000 {ratio:.2f} "
              f"(p_bar p99 {found['probs']['p99']:.1e}, E[H] p99 "
              f"{found['expected_entropy']['p99']:.1e}, MI p99 "
              f"{found['mutual_information']['p99']:.1e})", flush=True)
    return {"classes": classes, "factors": FACTORS, "latents": latent.batch_size,
            "reference_points": REFERENCE_POINTS[classes], "reference_standard_error": largest_se,
            "baseline": {"design": BASELINE[0], "samples": BASELINE[1], "seeds": BASELINE_SEEDS,
                         "error": baseline},
            "candidates": rows, "cells": cells}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=list(CLASSES),
                        choices=list(CLASSES))
    parser.add_argument("--draws", type=int, default=DRAWS, help="latents per family cell")
    args = parser.parse_args()
    torch.set_num_threads(1)
    by_k = [measure(k, draws=args.draws, candidates=CANDIDATES) for k in args.classes]
    passing = [s for s in CANDIDATES
               if all(next(r for r in m["candidates"] if r["samples"] == s)["passes"]
                      for m in by_k)]
    chosen = passing[0] if passing else None
    print(f"smallest S passing at every K: {chosen}; the exporter's default: "
          f"{DEFAULT_EXPORT_MC_SAMPLES}", flush=True)
    path = write_result({"family": {"mean_scales": MEAN_SCALES, "factor_scales": FACTOR_SCALES,
                                    "diagonal_scales": DIAGONAL_SCALES, "draws": args.draws},
                         "by_classes": by_k, "smallest_passing": chosen,
                         "default_samples": DEFAULT_EXPORT_MC_SAMPLES},
                        "default-samples", measures=[])
    return 0 if path else 1


if __name__ == "__main__":
    raise SystemExit(main())
