"""How close the fused MC head comes to the materialised HET layer: fp32, fp16 and bf16 inputs.

The fused head (``hetexport.fused.mc_head``, ``impl="triton"``: the compiled kernel on CUDA,
triton's interpreter without it) and the HET layer's own Monte Carlo average
(``hetexport.layers.mc_softmax``, fp32, the [B, S, K] samples materialised) get the same latent
Gaussian and noise bank; the figures are the largest absolute differences of p_bar (over
examples and classes) and of the expected entropy (over examples):

* ``fp32``: fp32 inputs, over a grid of shapes (B 1 and 3, K 10 and 37, S 16 and 100, R 0 and
  3, dense and parameter-efficient factors);
* ``fp16``, ``bf16``: inputs rounded to the half type (B 3, K 37, S 100, R 3), against the fp32
  layer on the same rounded inputs (what the kernel adds: accumulation) and on the unrounded
  inputs (what the rounding of the inputs costs).

Run: ``.venv/bin/python bench/fused_precision.py`` (``make bench-fused-precision``); writes
``bench/results/fused-precision-<machine>.json`` with its provenance and prints the table.
"""

from __future__ import annotations

import itertools
import json

import torch
from hetexport.fused import mc_head
from hetexport.fused.kernel import INTERPRETED
from hetexport.layers import LatentGaussian, NoiseBank, mc_softmax
from provenance import write_result

TEMPERATURE = 1.3
NOISE_SEED = 1
GRID = [(b, k, s, r, efficient)
        for b, k, s, r, efficient in itertools.product((1, 3), (10, 37), (16, 100), (0, 3),
                                                       (False, True))
        if not (efficient and r == 0)]
HALF_SHAPE = (3, 37, 100, 3)
HALF_TYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def latent_gaussian(batch: int, classes: int, factors: int, *,
                    efficient: bool) -> LatentGaussian:
    """A fixed latent Gaussian: means of a few units, scales away from 0, moderate factors."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    mean, scale = 2 * randn(batch, classes), randn(batch, classes).abs() + 0.1
    if efficient:
        return LatentGaussian(mean, scale, factor_scale=randn(batch, classes),
                              shared_factors=0.5 * randn(classes, factors))
    return LatentGaussian(mean, scale, 0.5 * randn(batch, classes, factors) if factors else None)


def differences(latent: LatentGaussian, noise: NoiseBank, reference: LatentGaussian,
                reference_noise: NoiseBank) -> dict[str, float]:
    """Largest |fused - layer| of p_bar and of the expected entropy."""
    fused = mc_head(latent, noise, TEMPERATURE, top_k=1, impl="triton")
    layer = mc_softmax(reference, reference_noise, torch.tensor(TEMPERATURE))
    return {"probs": (fused.probs - layer.probs).abs().max().item(),
            "expected_entropy": (fused.expected_entropy - layer.expected_entropy)
            .abs().max().item()}


def fp32_rows() -> list[dict[str, object]]:
    rows = []
    for batch, classes, samples, factors, efficient in GRID:
        latent = latent_gaussian(batch, classes, factors, efficient=efficient)
        noise = NoiseBank.fixed(samples, factors, classes, seed=NOISE_SEED)
        rows.append({"B": batch, "K": classes, "S": samples, "R": factors,
                     "parameter_efficient": efficient,
                     **differences(latent, noise, latent, noise)})
    return rows


def half_rows() -> dict[str, dict[str, object]]:
    batch, classes, samples, factors = HALF_SHAPE
    latent = latent_gaussian(batch, classes, factors, efficient=False)
    noise = NoiseBank.fixed(samples, factors, classes, seed=NOISE_SEED)
    rows = {}
    for name, dtype in HALF_TYPES.items():
        half = LatentGaussian(latent.mean.to(dtype), latent.scale.to(dtype),
                              latent.factors.to(dtype))
        half_noise = noise.to(dtype=dtype)
        rounded = LatentGaussian(half.mean.float(), half.scale.float(), half.factors.float())
        rows[name] = {
            "same_rounded_inputs": differences(half, half_noise, rounded,
                                               half_noise.to(dtype=torch.float32)),
            "unrounded_inputs": differences(half, half_noise, latent, noise),
        }
    return rows


def main() -> None:
    torch.manual_seed(0)
    fp32 = fp32_rows()
    report = {
        "engine": "triton interpreter (no CUDA)" if INTERPRETED else "compiled triton kernel",
        "temperature": TEMPERATURE,
        "fp32": {"rows": fp32,
                 "max_probs": max(row["probs"] for row in fp32),
                 "max_expected_entropy": max(row["expected_entropy"] for row in fp32)},
        "half_shape": dict(zip(("B", "K", "S", "R"), HALF_SHAPE, strict=True)),
        "half": half_rows(),
    }
    print(json.dumps({key: value for key, value in report.items() if key != "fp32"}, indent=2))
    print(f"fp32, {len(fp32)} shapes: max |p_bar diff| {report['fp32']['max_probs']:.2g}, "
          f"max |expected entropy diff| {report['fp32']['max_expected_entropy']:.2g}")
    write_result(report, "fused-precision", measures=[])


if __name__ == "__main__":
    main()
