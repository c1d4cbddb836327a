"""Summarise a Locust run from its ``<prefix>_stats.csv``: requests/s, p50/p95/p99, failures.

Typical usage (``run_locust.sh`` calls it)::

    python tests/load/locust_summary.py runs/load/20260101T120000/locust_stats.csv

Prints one line per request name and the aggregated line, and exits 1 when any request
failed (or none was made), 0 otherwise. With ``--results-dir DIR`` (``make load`` passes
``bench/results``) it also writes the rows to ``DIR/locust-<machine>.json`` with their
provenance (``bench/provenance.py``), ``--command`` being the command that ran Locust.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # provenance.py, shared by every benchmark
from provenance import write_result  # noqa: E402

AGGREGATED = "Aggregated"
MEASURES = ["server/src/hetgateway", "model_repo", "tests/load/locustfile.py"]
"""What a Locust run against ``make serve`` measures (the result's provenance)."""
EXIT_OK, EXIT_FAILURES = 0, 1


class Row(NamedTuple):
    """One line of Locust's stats CSV; latencies in milliseconds."""

    name: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def read_stats(path: Path) -> list[Row]:
    """The rows of a Locust ``_stats.csv`` (the aggregated row last, as Locust writes it)."""
    with path.open(newline="") as stream:
        return [
            Row(
                name=line["Name"],
                requests=int(line["Request Count"]),
                failures=int(line["Failure Count"]),
                requests_per_s=float(line["Requests/s"]),
                p50_ms=_percentile(line["50%"]),
                p95_ms=_percentile(line["95%"]),
                p99_ms=_percentile(line["99%"]),
            )
            for line in csv.DictReader(stream)
        ]


def _percentile(text: str) -> float:
    return float("nan") if text in ("", "N/A") else float(text)


def format_summary(rows: list[Row]) -> str:
    """A fixed-width table: name, requests, failures, req/s, p50, p95, p99 (ms)."""
    width = max([len(r.name) for r in rows] + [len("name")])
    header = f"{'name':<{width}}  {'requests':>8}  {'failures':>8}  {'req/s':>8}  " + "  ".join(
        f"{p:>7}" for p in ("p50 ms", "p95 ms", "p99 ms")
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {r.requests:>8}  {r.failures:>8}  {r.requests_per_s:>8.1f}  "
            f"{r.p50_ms:>7.0f}  {r.p95_ms:>7.0f}  {r.p99_ms:>7.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stats_csv", type=Path, help="Locust's <prefix>_stats.csv")
    parser.add_argument("--results-dir", type=Path, help="also write locust-<machine>.json here")
    parser.add_argument("--command", help="the command that ran Locust (the provenance)")
    args = parser.parse_args(argv)
    rows = read_stats(args.stats_csv)
    print(format_summary(rows))
    if args.results_dir is not None:
        write_result({"benchmark": "Locust (tests/load/locustfile.py) against the gateway",
                      "rows": [row._asdict() for row in rows]},
                     "locust", measures=MEASURES, command=args.command,
                     directory=args.results_dir)
    total = next((r for r in rows if r.name == AGGREGATED), None)
    if total is None or total.requests == 0:
        print("FAIL: no requests were made", file=sys.stderr)
        return EXIT_FAILURES
    if total.failures:
        print(f"FAIL: {total.failures} of {total.requests} requests failed", file=sys.stderr)
        return EXIT_FAILURES
    print(
        f"OK: {total.requests} requests, 0 failures, {total.requests_per_s:.1f} req/s, "
        f"p50 {total.p50_ms:.0f} ms, p95 {total.p95_ms:.0f} ms, p99 {total.p99_ms:.0f} ms"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
