"""The label-free accuracy estimate of each served model over its recently answered images.

Typical usage::

    monitor = AccuracyMonitor(metrics, window_images=1000)
    monitor.observe("fashion_het", decided.confident, calibrated_accuracy=0.756)

ATC (Garg et al., ICLR 2022): the model card's calibration chose a threshold on a confidence
score such that the share of calibration images at or above it equals their top-1 accuracy;
on new images, the share at or above it estimates theirs. Each model keeps a ring of the last
``window_images`` answered images (1 = its score reached the threshold) and the number of ones
in it, updated per image in O(1); the counts go (when they change) to the gauges
``GatewayMetrics`` turns into
``hetserve_estimated_accuracy{model}`` (pooled over the live workers when there are several:
each keeps its own last ``window_images``). ``hetserve_calibrated_accuracy{model}`` carries the
card's figure, so an alert can compare the two (``docker/prometheus/alerts.yml``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hetgateway.metrics import GatewayMetrics
from hetgateway.settings import DEFAULT_ACCURACY_WINDOW_IMAGES

DEFAULT_WINDOW_IMAGES = DEFAULT_ACCURACY_WINDOW_IMAGES
"""Images per model (per worker) the estimate is taken over (the ``accuracy_window_images``
setting): ATC's share then has a standard error of about 1.3 points at 80 % accuracy."""


class _Window:
    """A ring of the last ``size`` flags and how many of them are set."""

    __slots__ = ("flags", "next", "count", "hits", "published", "calibrated_accuracy")

    def __init__(self, size: int) -> None:
        self.flags = bytearray(size)
        self.next = 0
        self.count = 0
        self.hits = 0
        self.published = False
        self.calibrated_accuracy: float | None = None

    def push(self, values: Sequence[bool]) -> None:
        flags, size = self.flags, len(self.flags)
        position, hits = self.next, self.hits
        for value in values:
            hits += value - flags[position]
            flags[position] = value
            position = position + 1 if position + 1 < size else 0
        self.next, self.hits = position, hits
        self.count = min(size, self.count + len(values))


class AccuracyMonitor:
    """Per-model windows of ATC flags, mirrored into the accuracy-estimate gauges."""

    def __init__(self, metrics: GatewayMetrics, *,
                 window_images: int = DEFAULT_WINDOW_IMAGES) -> None:
        if window_images < 1:
            raise ValueError(f"window_images must be >= 1, got {window_images}")
        self._metrics = metrics
        self._size = window_images
        self._windows: dict[str, _Window] = {}

    def observe(self, model: str, confident: Sequence[bool], *,
                calibrated_accuracy: float) -> None:
        """Add one batch's flags (its images' ATC scores reached the threshold or not)."""
        window = self._windows.get(model)
        if window is None:
            window = self._windows[model] = _Window(self._size)
        count, hits = window.count, window.hits
        window.push(confident)
        series = self._metrics.accuracy_series(model)
        if window.count != count or not window.published:
            series.window_images.set(window.count)
        if window.hits != hits or not window.published:
            series.window_confident.set(window.hits)
        if calibrated_accuracy != window.calibrated_accuracy:
            series.calibrated_accuracy.set(calibrated_accuracy)
            window.calibrated_accuracy = calibrated_accuracy
        window.published = True

    def estimate(self, model: str) -> float | None:
        """This process's estimate for ``model`` (None before any image)."""
        window = self._windows.get(model)
        return None if window is None or not window.count else window.hits / window.count
