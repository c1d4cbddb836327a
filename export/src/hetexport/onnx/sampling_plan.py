"""How many samples an export bakes in, and what the model card says of their error.

``plan_sampling`` decides S: forced by ``mc_samples``; chosen by ``mc_error`` as the smallest S
whose 99th-percentile p_bar error (max over classes, against the exact integral of
``hetexport.exact``) on the first half of the held-out images is at most the target; else
``DEFAULT_EXPORT_MC_SAMPLES``. ``SamplingPlan.card`` then measures the exported ONNX graph
itself on the held-out images not used to choose S, for every served quantity, and writes the
model card's ``monte_carlo`` section.

Typical usage::

    plan = plan_sampling(model, mc_samples=None, mc_error=0.01, design=DESIGN, seed=0,
                         images=held_out)
    graph = build_serving_graph(model, mc_samples=plan.samples, ...)
    card_section = plan.card(model, onnx_bytes)
"""

from __future__ import annotations

from dataclasses import dataclass

from hetcontract import McError, MonteCarloSpec
from torch import Tensor

from hetexport.errors import ExportError
from hetexport.exact.measure import (
    Reference,
    SampleChoice,
    choose_samples,
    head_error,
    reference_for,
)
from hetexport.model import HetClassifier
from hetexport.onnx.runner import OnnxRunner

DEFAULT_EXPORT_MC_SAMPLES = 128
"""S baked into a HET graph unless ``mc_samples`` or ``mc_error`` decide it."""
DETERMINISTIC_DESIGN = "none"


@dataclass(frozen=True)
class SamplingPlan:
    """S and the bank design, with what is needed to measure the exported graph."""

    samples: int
    design: str
    seed: int
    requested_p99: float | None = None
    choice: SampleChoice | None = None
    reference: Reference | None = None
    report_images: Tensor | None = None

    def card(self, model: HetClassifier, onnx_model: bytes) -> MonteCarloSpec:
        """The model card's ``monte_carlo`` section; with held-out images, the exported graph's
        error on each served quantity (ONNX Runtime against the exact integral)."""
        if model.head.kind == "det":
            return MonteCarloSpec(design=DETERMINISTIC_DESIGN, samples=1, images=0)
        if self.reference is None or self.report_images is None:
            return MonteCarloSpec(design=self.design, samples=self.samples, seed=self.seed,
                                  images=0, requested_p99=self.requested_p99)
        served = OnnxRunner(onnx_model).run(self.report_images.numpy())
        report = head_error(model, self.report_images, self.reference, served=served)
        return MonteCarloSpec(
            design=self.design,
            samples=self.samples,
            seed=self.seed,
            images=report.images,
            reference=self.reference.description,
            reference_error=report.largest_reference_error(),
            requested_p99=self.requested_p99,
            error={name: McError(**values) for name, values in report.summary().items()},
        )


def plan_sampling(
    model: HetClassifier,
    *,
    mc_samples: int | None,
    mc_error: float | None,
    design: str,
    seed: int,
    images: Tensor | None,
) -> SamplingPlan:
    """S for this export (module doc); ExportError when asked for what cannot be done."""
    if model.head.kind == "det":
        return SamplingPlan(1, DETERMINISTIC_DESIGN, seed)
    if mc_samples is not None and mc_error is not None:
        raise ExportError("give either --mc-samples (S) or --mc-error (S chosen), not both")
    if mc_error is not None and (images is None or len(images) < 2):
        raise ExportError("--mc-error needs held-out images to measure the error on")
    if images is None:
        return SamplingPlan(mc_samples or DEFAULT_EXPORT_MC_SAMPLES, design, seed)
    reference = reference_for(model, images)
    if mc_error is None:
        return SamplingPlan(mc_samples or DEFAULT_EXPORT_MC_SAMPLES, design, seed,
                            reference=reference, report_images=images)
    half = len(images) // 2
    choice = choose_samples(model, images[:half], reference.subset(slice(0, half)),
                            target_p99=mc_error, design=design, seed=seed)
    if not choice.met:
        tried = ", ".join(f"S={s}: {e:.2g}" for s, e in choice.tried.items())
        raise ExportError(f"no S reaches a p_bar p99 error of {mc_error:g} ({tried})")
    return SamplingPlan(choice.samples, design, seed, requested_p99=mc_error, choice=choice,
                        reference=reference.subset(slice(half, None)),
                        report_images=images[half:])
