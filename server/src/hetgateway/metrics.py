"""Prometheus metrics of one gateway app, in the app's own ``CollectorRegistry``.

Every label value comes from a bounded set (route templates, served model names, status codes),
never from a caller's raw string, so the number of series stays bounded however the gateway is
called.

Each app owns its registry (never the process-global one), so several apps (tests) can live
in one process. New metrics are added here as attributes and recorded where they happen.

Several workers (``hetgateway gateway --workers N``): the parent sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts them, every worker then writes its values to
files there (prometheus_client's multiprocess mode), and ``exposition`` reads them all: a
counter scraped from any worker is the sum over the workers, the in-flight gauge the sum over
the live ones (``livesum``). Every metric here is a counter, a histogram or a gauge with a
multiprocess mode, all of which multiprocess mode supports.

The label-free accuracy estimate (ATC, ``hetgateway.accuracy_monitor``) is exposed as
``hetserve_estimated_accuracy{model}``, the share of confident images in the recent windows:
each worker sets two ``livesum`` gauges (images in its window, confident ones among them) and
the estimate is their ratio, computed when the metrics are collected
(``EstimatedAccuracyCollector``), so that with several workers it pools the live workers'
windows instead of showing one worker's. ``hetserve_calibrated_accuracy{model}`` is the
model card's figure the estimate is compared with.

Typical usage::

    metrics = GatewayMetrics()
    metrics.requests.labels(method="POST", route="/v1/predict", model="fashion_het",
                            status="200").inc()
    metrics.triton_seconds.labels(model="fashion_het").observe(0.004)
    body = metrics.exposition()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
from hetcontract import OutputName
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Predictive entropy H[p_bar] in nats lies in [0, log K] (log 10 = 2.30, log 1000 = 6.91).
ENTROPY_BUCKETS_NATS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0,
                        5.0, 7.0)
TOP1_PROBABILITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST
REFUSED_METRIC = "hetserve_http_requests_refused"
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's switch to multiprocess mode: the directory the workers' files live in."""
ESTIMATED_ACCURACY_METRIC = "hetserve_estimated_accuracy"
WINDOW_IMAGES_METRIC = "hetserve_estimated_accuracy_window_images"
WINDOW_CONFIDENT_METRIC = "hetserve_estimated_accuracy_confident_images"
CALIBRATED_ACCURACY_METRIC = "hetserve_calibrated_accuracy"


class ModelMetrics(NamedTuple):
    """One model's labelled series, looked up once (``GatewayMetrics.for_model``)."""

    batch_size: Any
    triton_seconds: Any
    triton_call_rows: Any
    triton_call_requests: Any
    predictive_entropy: Any
    top1_probability: Any


class AccuracySeries(NamedTuple):
    """One model's accuracy-estimate gauges (``GatewayMetrics.accuracy_series``)."""

    window_images: Any
    window_confident: Any
    calibrated_accuracy: Any


class GatewayMetrics:
    """The gateway's counters and histograms.

    Labelled series are looked up once per label set and kept (``for_model``,
    ``count_request``): ``labels()`` takes a lock and builds a key on every call, and a request
    records six series. The label sets are bounded (see the module docstring), so are these
    caches.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.exposed_registry = multiprocess_registry() or self.registry
        """What a scrape reads: every worker's files in multiprocess mode, else ``registry``."""
        self._models: dict[str, ModelMetrics] = {}
        self._accuracy: dict[str, AccuracySeries] = {}
        self._requests: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "hetserve_http_requests_total",
            "HTTP requests answered, by method, route template, model and status code",
            ["method", "route", "model", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "hetserve_http_request_duration_seconds",
            "Time from request to answer in the gateway, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.triton_seconds = Histogram(
            "hetserve_triton_request_duration_seconds",
            "Round trip of one inference call to Triton (which may carry several coalesced "
            "requests), by model",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.triton_call_rows = Histogram(
            "hetserve_triton_call_batch_size",
            "Images per inference call to Triton, by model (above a request's own inputs "
            "when concurrent requests were coalesced)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.triton_call_requests = Histogram(
            "hetserve_triton_call_requests",
            "Predict requests answered by each inference call to Triton, by model",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.replica_requests = Counter(
            "hetserve_triton_replica_requests_total",
            "Inference calls sent to each Triton replica (host:port), by outcome: ok, error "
            "(Triton answered with an error), replica_gone (retried on another replica)",
            ["replica", "outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "hetserve_predict_batch_size",
            "Inputs per predict request, by model",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

        self.in_flight = Gauge(
            "hetserve_http_requests_in_flight",
            "API requests admitted and not yet answered (bounded by admission control)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            REFUSED_METRIC,
            "API requests refused with 429 by admission control (not in http_requests_total)",
            registry=self.registry,
        )
        self.predictive_entropy = Histogram(
            "hetserve_predictive_entropy_nats",
            "Predictive entropy H[p_bar] of each answered input, by model (drift shows here)",
            ["model"],
            buckets=ENTROPY_BUCKETS_NATS,
            registry=self.registry,
        )
        self.top1_probability = Histogram(
            "hetserve_top1_probability",
            "MC-averaged probability of the top class of each answered input, by model",
            ["model"],
            buckets=TOP1_PROBABILITY_BUCKETS,
            registry=self.registry,
        )
        self.window_images = Gauge(
            WINDOW_IMAGES_METRIC,
            "Answered images in the accuracy estimate's window (the last N per worker), by "
            "model",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.window_confident = Gauge(
            WINDOW_CONFIDENT_METRIC,
            "Images of the accuracy estimate's window whose ATC score reaches the card's "
            "threshold, by model",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.calibrated_accuracy = Gauge(
            CALIBRATED_ACCURACY_METRIC,
            "Top-1 accuracy on the model card's calibration images (the figure the estimated "
            "accuracy is compared with), by model",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        if self.exposed_registry is self.registry:  # one process: from its own gauges
            self.registry.register(EstimatedAccuracyCollector(
                lambda: chain(self.window_images.collect(), self.window_confident.collect())))

    def for_model(self, model: str) -> ModelMetrics:
        """The per-model series of ``model``."""
        series = self._models.get(model)
        if series is None:
            series = self._models[model] = ModelMetrics(
                batch_size=self.batch_size.labels(model=model),
                triton_seconds=self.triton_seconds.labels(model=model),
                triton_call_rows=self.triton_call_rows.labels(model=model),
                triton_call_requests=self.triton_call_requests.labels(model=model),
                predictive_entropy=self.predictive_entropy.labels(model=model),
                top1_probability=self.top1_probability.labels(model=model),
            )
        return series

    def accuracy_series(self, model: str) -> AccuracySeries:
        """The accuracy-estimate gauges of ``model``."""
        series = self._accuracy.get(model)
        if series is None:
            series = self._accuracy[model] = AccuracySeries(
                window_images=self.window_images.labels(model=model),
                window_confident=self.window_confident.labels(model=model),
                calibrated_accuracy=self.calibrated_accuracy.labels(model=model),
            )
        return series

    def count_request(
        self, *, method: str, route: str, model: str, status: int, seconds: float
    ) -> None:
        """Count one answered request and observe its duration."""
        key = (method, route, model, status)
        series = self._requests.get(key)
        if series is None:
            series = self._requests[key] = (
                self.requests.labels(method=method, route=route, model=model, status=str(status)),
                self.request_seconds.labels(method=method, route=route),
            )
        series[0].inc()
        series[1].observe(seconds)

    def observe_triton_call(self, model: str, rows: int, requests: int, seconds: float) -> None:
        """One inference call to Triton: its round trip, its images and the requests it
        answered (a ``Coalescer`` call observer)."""
        series = self.for_model(model)
        series.triton_seconds.observe(seconds)
        series.triton_call_rows.observe(rows)
        series.triton_call_requests.observe(requests)

    def count_replica_call(self, replica: str, outcome: str) -> None:
        """One inference attempt on ``replica`` (a ``TritonBackend`` call observer)."""
        self.replica_requests.labels(replica=replica, outcome=outcome).inc()

    def observe_uncertainty(self, model: str, outputs: dict[str, np.ndarray]) -> None:
        """Record each input's predictive entropy ([B]) and top-1 probability (``topk_probs``
        [B, k_max], column 0) from a batch of Triton outputs."""
        series = self.for_model(model)
        entropy, top1 = series.predictive_entropy, series.top1_probability
        entropies = np.asarray(outputs[OutputName.PREDICTIVE_ENTROPY.value]).reshape(-1)
        top_probs = np.asarray(outputs[OutputName.TOPK_PROBS.value]).reshape(len(entropies), -1)
        for value in entropies:
            entropy.observe(float(value))
        for value in top_probs[:, 0]:
            top1.observe(float(value))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format; in multiprocess mode, every worker's
        values (summed by metric and labels)."""
        return generate_latest(self.exposed_registry)


class EstimatedAccuracyCollector:
    """``hetserve_estimated_accuracy{model}``: confident images over images in the windows,
    from the two window gauges as ``source`` yields them (summed over the live workers in
    multiprocess mode); no sample for a model whose windows are empty."""

    def __init__(self, source: Callable[[], Iterable[Metric]]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, dict[str, float]] = {WINDOW_IMAGES_METRIC: {},
                                               WINDOW_CONFIDENT_METRIC: {}}
        for family in self._source():
            if family.name in totals:
                for sample in family.samples:
                    model = sample.labels.get("model", "")
                    by_model = totals[family.name]
                    by_model[model] = by_model.get(model, 0.0) + sample.value
        estimate = self._family()
        for model, images in sorted(totals[WINDOW_IMAGES_METRIC].items()):
            if images > 0:
                confident = totals[WINDOW_CONFIDENT_METRIC].get(model, 0.0)
                estimate.add_metric([model], confident / images)
        yield estimate

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            ESTIMATED_ACCURACY_METRIC,
            "Label-free top-1 accuracy estimate (ATC, Garg et al. 2022) over the recently "
            "answered images, by model: the share whose ATC score reaches the card's threshold",
            labels=["model"],
        )


def multiprocess_registry() -> CollectorRegistry | None:
    """A registry reading every worker's files, when ``PROMETHEUS_MULTIPROC_DIR`` is set
    (in a worker, or in the parent that serves the metrics port), with the accuracy estimate
    computed from the workers' pooled windows."""
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        return None
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(EstimatedAccuracyCollector(MultiProcessCollector(None).collect))
    return registry
