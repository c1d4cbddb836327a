"""The head benchmark's bookkeeping (``bench/head_bench.py``): its cost model for the floor, a
partial run (``--sections``) that keeps the other parts of the results file with their dates,
and the training-memory rows, which measure both layers where they fit and say why not where
the materialised one does not. No timings are asserted: benchmarks are not timed tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[3] / "bench" / "head_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("head_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH.parent))  # its sibling provenance.py, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(BENCH.parent))


def test_the_floor_counts_each_input_once_and_the_factor_products(bench):
    k, r, s, b = 1000, 15, 1000, 32
    dense_bytes, dense_flops = bench.head_cost(bench.HeadConfig(k, r, s, False), b)
    lean_bytes, lean_flops = bench.head_cost(bench.HeadConfig(k, r, s, True), b)
    four = bench.BYTES_PER_FLOAT
    assert dense_bytes == four * (2 * b * k + b * k * r + s * r + s * k + b * k + 3 * b)
    assert lean_bytes == four * (2 * b * k + b * k + k * r + s * r + s * k + b * k + 3 * b)
    assert dense_flops == lean_flops == b * s * k * (2 * r + bench.FLOPS_PER_ENTRY)
    machine = bench.Machine("m", copy_bytes_per_s=1e9, matmul_flops_per_s=1e12)
    assert machine.floor_s(dense_bytes, dense_flops) == max(dense_bytes / 1e9, dense_flops / 1e12)


def test_a_partial_run_keeps_the_other_sections_with_their_dates_and_rates(bench, tmp_path):
    output = tmp_path / "dev.json"
    output.write_text(json.dumps({
        "device": "dev", "date": "2026-01-01T00:00:00+00:00", "copy_gb_per_s": 5.0,
        "matmul_gflop_per_s": 40.0, "rows": [{"impl": "eager"}], "end_to_end": [{"head": "det"}],
        "training": [{"impl": "old"}],
    }))
    machine = bench.Machine("dev", copy_bytes_per_s=9e9, matmul_flops_per_s=90e9)
    merged = bench.merge_results(output, machine, {"training": [{"impl": "new"}]},
                                 quick=False, threads=1)
    assert merged["rows"] == [{"impl": "eager"}]
    assert merged["end_to_end"] == [{"head": "det"}]
    assert merged["training"] == [{"impl": "new"}]
    assert merged["dates"]["rows"] == "2026-01-01T00:00:00+00:00"
    assert merged["dates"]["training"] == merged["date"] != "2026-01-01T00:00:00+00:00"
    assert (merged["copy_gb_per_s"], merged["matmul_gflop_per_s"]) == (5.0, 40.0)
    with_rows = bench.merge_results(output, machine, {"rows": []}, quick=False, threads=1)
    assert (with_rows["copy_gb_per_s"], with_rows["matmul_gflop_per_s"]) == (9.0, 90.0)


def test_each_section_carries_its_provenance_and_the_file_the_oldest(bench, tmp_path):
    output = tmp_path / "dev.json"
    machine = bench.Machine("dev", copy_bytes_per_s=1e9, matmul_flops_per_s=1e9)
    first = bench.merge_results(output, machine, {"rows": [{"impl": "eager"}]}, quick=False,
                                threads=1)
    assert first["provenance"] == first["provenances"]["rows"]
    assert set(bench.MEASURES) <= set(first["provenance"]["measures"])  # and derived code
    old = {**first["provenance"], "date": "2026-01-01T00:00:00+00:00", "commit": "0" * 40}
    output.write_text(json.dumps({**first, "provenances": {"rows": old}}))
    merged = bench.merge_results(output, machine, {"training": [{"impl": "new"}]},
                                 quick=False, threads=1)
    assert merged["provenances"]["training"]["date"] > old["date"]
    assert merged["provenance"] == old, "the file is as old as its oldest section"
    output.write_text(json.dumps({"device": "dev", "rows": [{"impl": "eager"}]}))
    unknown = bench.merge_results(output, machine, {"training": [{"impl": "new"}]},
                                  quick=False, threads=1)
    assert unknown["provenance"] is None, "a kept section without provenance leaves none"


def test_peak_memory_on_cpu_sees_a_short_lived_allocation(bench):
    size = 256 * 2**20

    def allocate_touch_and_free() -> None:
        block = torch.ones(size // 4, dtype=torch.float32)
        del block

    with bench._exact_rss():
        peak = bench._peak_rss_mb(allocate_touch_and_free)
    assert size / 2**20 * 0.95 <= peak <= size / 2**20 * 1.5


def test_a_results_file_of_another_device_is_not_mixed_in(bench, tmp_path):
    output = tmp_path / "dev.json"
    output.write_text(json.dumps({"device": "other", "rows": [{"impl": "eager"}]}))
    machine = bench.Machine("dev", copy_bytes_per_s=1e9, matmul_flops_per_s=1e9)
    merged = bench.merge_results(output, machine, {"training": []}, quick=True, threads=2)
    assert merged["rows"] == [] and merged["device"] == "dev"


def test_a_materialised_step_over_the_cpu_memory_is_not_run_and_says_why(bench, monkeypatch):
    big = bench.TrainingConfig(bench.HeadConfig(21843, 50, 1000, True), 256)
    needed = bench.materialised_training_bytes(big)
    assert needed == 256 * 1000 * 21843 * bench.MATERIALISED_TRAINING_BYTES_PER_ENTRY
    assert needed > 80 * 2**30  # the shape the lean layer exists for: over an 80 GB GPU
    monkeypatch.setattr(bench.psutil, "virtual_memory",
                        lambda: SimpleNamespace(available=24 * 2**30))
    cpu = torch.device("cpu")
    reason = bench._training_skip_reason("materialised", big, cpu)
    assert reason.startswith("does not fit: needs ~125 GiB (an estimate, not a measurement")
    assert bench._training_skip_reason("lean", big, cpu) == ""
    small = bench.TrainingConfig(bench.HeadConfig(10, 2, 8, False), 2)
    assert bench._training_skip_reason("materialised", small, cpu) == ""


def test_training_rows_measure_both_layers_or_say_why_not(bench, monkeypatch):
    monkeypatch.setattr(bench, "TRAINING_CONFIGS", (
        bench.TrainingConfig(bench.HeadConfig(12, 3, 16, False), 2),
        bench.TrainingConfig(bench.HeadConfig(12, 3, 16, True), 2),
    ))
    monkeypatch.setattr(bench, "MATERIALISED_TRAINING_BYTES_PER_ENTRY", 2**40)  # never fits
    monkeypatch.setattr(bench, "REPEAT_TIME_S", 0.0)
    lines: list[str] = []
    rows = bench.training_rows(torch.device("cpu"), lines.append)
    assert [(r["impl"], r["B"]) for r in rows] == [("materialised", 2), ("lean", 2)] * 2
    for row in rows:
        if row["impl"] == "lean":
            assert row["ms"] > 0 and row["peak_mb"] is not None and row["note"] == ""
        else:
            assert row["ms"] is None and row["peak_mb"] is None
            assert row["note"].startswith("does not fit")
    assert sum("not run: does not fit" in line for line in lines) == 2
