"""The label-free accuracy estimate as Prometheus sees it: the share of confident images over
the last N answered per model, with the card's figure beside it, pooled over workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hetgateway.accuracy_monitor import AccuracyMonitor
from hetgateway.metrics import (
    CALIBRATED_ACCURACY_METRIC,
    ESTIMATED_ACCURACY_METRIC,
    MULTIPROCESS_DIR_ENV,
    WINDOW_IMAGES_METRIC,
    GatewayMetrics,
)


def samples(metrics: GatewayMetrics, name: str) -> dict[str, float]:
    """``{model: value}`` of one metric in the exposition text."""
    values = {}
    for line in metrics.exposition().decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].split("} ")
            values[labels.split('"')[1]] = float(value)
    return values


def test_the_estimate_is_the_confident_share_of_the_last_n_images() -> None:
    metrics = GatewayMetrics()
    monitor = AccuracyMonitor(metrics, window_images=4)
    monitor.observe("m", [True, False, True], calibrated_accuracy=0.8)
    assert samples(metrics, ESTIMATED_ACCURACY_METRIC) == {"m": pytest.approx(2 / 3)}
    monitor.observe("m", [False, False, True], calibrated_accuracy=0.8)  # drops the first True
    assert monitor.estimate("m") == pytest.approx(2 / 4)
    assert samples(metrics, ESTIMATED_ACCURACY_METRIC) == {"m": pytest.approx(0.5)}
    assert samples(metrics, WINDOW_IMAGES_METRIC) == {"m": 4.0}
    assert samples(metrics, CALIBRATED_ACCURACY_METRIC) == {"m": 0.8}


def test_a_batch_longer_than_the_window_keeps_its_last_images() -> None:
    metrics = GatewayMetrics()
    monitor = AccuracyMonitor(metrics, window_images=3)
    monitor.observe("m", [True] * 5 + [False, False], calibrated_accuracy=0.9)
    assert monitor.estimate("m") == pytest.approx(1 / 3)


def test_models_have_their_own_windows_and_no_sample_before_any_image() -> None:
    metrics = GatewayMetrics()
    assert samples(metrics, ESTIMATED_ACCURACY_METRIC) == {}
    monitor = AccuracyMonitor(metrics, window_images=10)
    monitor.observe("a", [True], calibrated_accuracy=0.7)
    monitor.observe("b", [False, False], calibrated_accuracy=0.6)
    assert samples(metrics, ESTIMATED_ACCURACY_METRIC) == {"a": 1.0, "b": 0.0}
    assert monitor.estimate("c") is None
    with pytest.raises(ValueError):
        AccuracyMonitor(metrics, window_images=0)


WORKER = textwrap.dedent("""
    import sys
    from hetgateway.accuracy_monitor import AccuracyMonitor
    from hetgateway.metrics import GatewayMetrics
    flags = [c == "1" for c in sys.argv[1]]
    AccuracyMonitor(GatewayMetrics(), window_images=100).observe(
        "m", flags, calibrated_accuracy=0.75)
""")


def test_with_several_workers_the_estimate_pools_their_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes (multiprocess mode: values in files under
    PROMETHEUS_MULTIPROC_DIR) see 3 of 4 and 1 of 4 confident images: the scrape says 4 / 8,
    not one worker's share nor the mean of two gauges' values taken as one."""
    environment = {**os.environ, MULTIPROCESS_DIR_ENV: str(tmp_path)}
    for flags in ("1110", "1000"):
        subprocess.run([sys.executable, "-c", WORKER, flags], env=environment, check=True,
                       timeout=60)
    monkeypatch.setenv(MULTIPROCESS_DIR_ENV, str(tmp_path))
    metrics = GatewayMetrics()
    assert samples(metrics, ESTIMATED_ACCURACY_METRIC) == {"m": pytest.approx(0.5)}
    assert samples(metrics, WINDOW_IMAGES_METRIC) == {"m": 8.0}
    assert samples(metrics, CALIBRATED_ACCURACY_METRIC) == {"m": 0.75}
