"""How many samples an export bakes in, and what the model card says of their error.

``plan_sampling`` decides S: forced by ``mc_samples``; chosen by ``mc_error`` as the smallest S
whose 99th-percentile p_bar error (max over classes, against the exact integral of
``hetexport.exact``) on the first half of the held-out images is at most the target; else
``DEFAULT_EXPORT_MC_SAMPLES``. With held-out images the bank's scrambling seed is chosen too
(``hetexport.exact.bank_search``: the best of ``search_seeds`` seeds on the same first half).
With held-out images ``"auto"`` (the default design) means the fitted bank, at any K: the
``"optimized"`` design (``FITTED_DESIGN``) needs held-out images: its bank is the
``moment_matched_sobol`` bank of the searched seed, then fitted to the first half's latents
(``hetexport.exact.bank_fit``); with ``mc_error`` its p_bar error is measured on that same
first half (optimistic: the fit saw those images), the card's on the second.
``SamplingPlan.card`` then measures the exported ONNX graph itself on the second half, which
neither choice saw, for every served quantity, and writes the model card's ``monte_carlo``
section.

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
from hetexport.exact.bank_fit import fit_bank
from hetexport.exact.bank_search import (
    DEFAULT_SEARCH_SEEDS,
    BankSearch,
    baseline_errors,
    search_bank,
)
from hetexport.exact.measure import (
    SAMPLE_COUNTS,
    Reference,
    head_error,
    reference_for,
)
from hetexport.layers import NoiseBank
from hetexport.layers.noise_bank import AUTO_DESIGN, FITTED_DESIGN, resolve_design
from hetexport.model import HetClassifier
from hetexport.onnx.runner import OnnxRunner

DEFAULT_EXPORT_MC_SAMPLES = 512
"""S baked into a HET graph unless ``mc_samples`` or ``mc_error`` decide it, chosen by a
model-free criterion (``bench/default_samples.py``, ``make bench-default-samples``): the
smallest power of two at which the model-free design (``moment_matched_sobol``) integrates
every served integral (p_bar, both entropies, the mutual information; mean and 99th percentile)
at least as exactly as plain Monte Carlo with S = 1000 on a family of latents that spans the
demo model's scales, at K = 10 and at K = 1000. S = 256 misses it at both (the expected
entropy's and the mutual information's 99th percentiles). The fitted design (``FITTED_DESIGN``,
the default with held-out images) reaches S = 1000's accuracy on the demo with 128 points, and
the demo ships it."""
DETERMINISTIC_DESIGN = "none"
FITTED_START_DESIGN = "moment_matched_sobol"
"""The design a fitted bank starts from (its seed searched first)."""


@dataclass(frozen=True)
class SamplingPlan:
    """S, the bank design and its seed (a fitted bank: its starting seed, and the ``bank``
    itself), with what is needed to measure the exported graph."""

    samples: int
    design: str
    seed: int
    bank: NoiseBank | None = None
    requested_p99: float | None = None
    search: BankSearch | None = None
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
            seeds_searched=len(self.search.scores) if self.search else 0,
            images=report.images,
            reference=self.reference.description,
            reference_error=report.largest_reference_error(),
            requested_p99=self.requested_p99,
            error={name: McError(**values) for name, values in report.summary().items()},
            shares_withheld=report.shares_withheld,
        )


def plan_sampling(
    model: HetClassifier,
    *,
    mc_samples: int | None,
    mc_error: float | None,
    design: str,
    seed: int,
    images: Tensor | None,
    search_seeds: int = DEFAULT_SEARCH_SEEDS,
) -> SamplingPlan:
    """S and the bank for this export (module doc); ExportError when asked for what cannot be
    done. ``seed`` is the bank's seed without images, the first seed searched with them."""
    if model.head.kind == "det":
        return SamplingPlan(1, DETERMINISTIC_DESIGN, seed)
    if mc_samples is not None and mc_error is not None:
        raise ExportError("give either a sample count S or an error target (S chosen), not both")
    if mc_error is not None and (images is None or len(images) < 2):
        raise ExportError("an error target needs held-out images to measure the error on")
    head = model.head
    if design == AUTO_DESIGN and images is not None and len(images) >= 2:
        design = FITTED_DESIGN  # held-out images: the bank is fitted to the model, at any K
    fitted = design == FITTED_DESIGN
    def named(samples: int) -> str:  # the design "auto" resolves to at this S
        return resolve_design(design, samples, head.num_factors, head.diag_noise_dim)

    if fitted and (images is None or len(images) < 2):
        raise ExportError(f"the {FITTED_DESIGN!r} bank is fitted on held-out images, and "
                          "none were given")
    if images is None or len(images) < 2:
        samples = mc_samples or DEFAULT_EXPORT_MC_SAMPLES
        return SamplingPlan(samples, named(samples), seed)
    half = len(images) // 2
    reference = reference_for(model, images)
    select, select_reference = images[:half], reference.subset(slice(0, half))
    seeds = range(seed, seed + max(1, search_seeds))
    candidates = [mc_samples or DEFAULT_EXPORT_MC_SAMPLES] if mc_error is None else SAMPLE_COUNTS
    if fitted and mc_error is not None:  # S/2 > R: the bank is whitened (by blocks if need be)
        candidates = [s for s in candidates if s // 2 > head.num_factors]
    baseline = baseline_errors(model, select, select_reference)
    tried: dict[int, float] = {}
    for samples in candidates:
        start = FITTED_START_DESIGN if fitted else named(samples)
        found, bank, p_bar_p99 = _choose_bank(model, select, select_reference, samples=samples,
                                              design=start, fit=fitted, seeds=seeds,
                                              baseline=baseline)
        tried[samples] = p_bar_p99
        if mc_error is None or p_bar_p99 <= mc_error:
            return SamplingPlan(samples, named(samples), found.seed, bank=bank,
                                requested_p99=mc_error, search=found,
                                reference=reference.subset(slice(half, None)),
                                report_images=images[half:])
    listed = ", ".join(f"S={s}: {e:.2g}" for s, e in tried.items())
    raise ExportError(f"no S reaches a p_bar p99 error of {mc_error:g} ({listed})")


def _choose_bank(
    model: HetClassifier,
    images: Tensor,
    reference: Reference,
    *,
    samples: int,
    design: str,
    fit: bool,
    seeds: range,
    baseline: dict[str, dict[str, float]],
) -> tuple[BankSearch, NoiseBank | None, float]:
    """The searched seed of ``design`` at S on the selection ``images``, with ``fit`` the
    bank fitted from it (else None), and the chosen bank's p_bar p99 error on them."""
    try:
        found = search_bank(model, images, reference, samples=samples, design=design,
                            seeds=seeds, baseline=baseline)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    if not fit:
        return found, None, found.p_bar_p99
    bank = fit_bank(reference, samples=samples, seed=found.seed).bank
    summary = head_error(model, images, reference, bank=bank, top_k=1,
                         num_confusable=1).summary()
    return found, bank, summary["probs"]["p99"]
