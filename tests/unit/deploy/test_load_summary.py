"""tests/load/locust_summary.py: the figures it prints and its exit status."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
)


@pytest.fixture(scope="module")
def summary():
    spec = importlib.util.spec_from_file_location(
        "locust_summary", ROOT / "tests/load/locust_summary.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stats(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "locust_stats.csv"
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def test_a_run_without_failures_prints_its_figures_and_exits_zero(summary, tmp_path, capsys):
    path = _stats(
        tmp_path,
        [
            "POST,fashion_het json b1,90,0,12,14,5,80,900,9.0,0.0,12,13,14,15,20,30,40,50,70,80,80",
            ",Aggregated,100,0,12,15,5,90,950,10.0,0.0,12,13,14,15,21,33,45,55,80,90,90",
        ],
    )
    assert summary.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK: 100 requests, 0 failures, 10.0 req/s, p50 12 ms, p95 33 ms, p99 55 ms" in out
    assert "fashion_het json b1" in out


def test_any_failure_makes_the_exit_status_nonzero(summary, tmp_path, capsys):
    path = _stats(
        tmp_path, [",Aggregated,100,3,12,15,5,90,950,10.0,0.3,12,13,14,15,21,33,45,55,80,90,90"]
    )
    assert summary.main([str(path)]) == 1
    assert "FAIL: 3 of 100 requests failed" in capsys.readouterr().err


def test_a_run_that_made_no_request_fails(summary, tmp_path, capsys):
    path = _stats(
        tmp_path, [",Aggregated,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A"]
    )
    assert summary.main([str(path)]) == 1
    assert "no requests" in capsys.readouterr().err


def test_with_a_results_dir_the_figures_are_written_with_their_provenance(summary, tmp_path):
    path = _stats(
        tmp_path, [",Aggregated,100,0,12,15,5,90,950,10.0,0.0,12,13,14,15,21,33,45,55,80,90,90"]
    )
    out = tmp_path / "results"
    command = "bash tests/load/run_locust.sh http://127.0.0.1:1 2 5s"
    assert summary.main([str(path), "--results-dir", str(out), "--command", command]) == 0
    (written,) = out.glob("locust-*.json")
    result = json.loads(written.read_text())
    assert result["provenance"]["command"] == command
    measured = set(result["provenance"]["measures"])
    assert set(summary.MEASURES) <= measured  # declared, and the code the command runs:
    assert {"tests/load/run_locust.sh", "tests/load/locustfile.py"} <= measured
    assert len(result["provenance"]["commit"]) == 40
    (row,) = result["rows"]
    assert (row["requests"], row["requests_per_s"], row["p95_ms"]) == (100, 10.0, 33.0)
