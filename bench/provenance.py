"""Where a benchmark figure came from: written into every result file under ``bench/results/``.

Every result file carries a top-level ``"provenance"`` object, so a figure quoted in the README
can be traced to the command that produced it and checked against the code it measured:

* ``command``: the command line that wrote the file (rerun it to reproduce the figures);
* ``commit``: ``git rev-parse HEAD`` when it ran; ``dirty``: True when any of ``measures`` had
  uncommitted changes then (such a result measured code that no commit holds);
* ``measures``: the repository paths whose code the figures measure; a result is stale once a
  later commit changes one of them;
* ``date`` (ISO 8601, UTC) and ``machine`` (architecture, usable cores, CPU model);
  ``load_average_1m``: the machine's 1-minute load average when the file was written (on a
  shared machine, how much else was running: read a figure with it).

Typical usage (from a script in ``bench/``)::

    from provenance import provenance, write_result
    report = {"provenance": provenance(["server/src", "bench/gateway_bench.py"]), ...}
    write_result({...figures...}, "soak", measures=["server/src/hetgateway", "bench/soak.py"])

``tests/unit/docs/test_readme_figures.py`` holds the README to these files: every number in a
``<!-- results: bench/results/<file>.json -->`` block must be in that file, whose provenance
must be clean and not older than the last commit changing any of its ``measures``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def provenance(measures: Sequence[str], *, command: str | None = None) -> dict[str, object]:
    """The provenance object for a result measuring ``measures`` (paths from the repo root)."""
    return {
        "command": command or _invocation(),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", *measures)),
        "measures": list(measures),
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine_description(),
        "load_average_1m": os.getloadavg()[0],
    }


def write_result(report: dict[str, object], benchmark: str, *, measures: Sequence[str],
                 machine: str | None = None, command: str | None = None,
                 directory: Path = RESULTS_DIR) -> Path:
    """Write ``report`` with its provenance first to ``<directory>/<benchmark>-<machine>.json``
    (``bench/results/``; ``machine`` defaults to ``machine_slug()``); prints and returns the
    path."""
    output = directory / f"{benchmark}-{machine or machine_slug()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    content = {"provenance": provenance(measures, command=command), **report}
    output.write_text(json.dumps(content, indent=2) + "\n")
    print(f"wrote {output}")
    return output


def machine_slug() -> str:
    """``x86_64-2cpu``: the short machine name in result file names."""
    return f"{platform.machine()}-{os.cpu_count()}cpu"


def machine_description() -> str:
    """``x86_64, 2 cores, AMD EPYC ...``: architecture, usable cores and the CPU model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, {_cpu_model()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _invocation() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO_ROOT)
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()
