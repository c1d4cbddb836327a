"""Failed requests while a replica leaves a pool of two under load (issue 27's experiment),
with the gateway and replicas before the drain work and with this tree's.

Each configuration runs two ``hetgateway triton`` replicas (``bench/replica_fleet.py``: each on
its own 127.0.27.N address, published under one DNS name) behind one gateway (one worker, its
default settings: the name resolved again every second) and 8 clients sending one-image
predictions back to back. A run replaces one replica: a new one is started and published, the
gateway counts it, then the old one is taken out in one of the two orders Kubernetes may give:
``dns-first`` (out of DNS, SIGTERM 0.5 s later) or ``sigterm-first`` (SIGTERM, out of DNS
1.5 s later). A run ends 1 s after the old replica has exited; its failed requests are the
non-200 answers that ended within it. Runs alternate the orders.

Configurations (``--configs``):

- ``issue``: the gateway and replicas of ``ISSUE_REF``, main when issue 27 measured this (a
  shutting-down Triton's "unknown model" answered as the caller's problem, 503);
- ``baseline``: those of ``--baseline`` (default ``BASELINE_REF``, main just before this work:
  "unknown model" already sent to another replica). Both run from a copy of their tree
  (``git archive``); their gateway resolves a ``dns:`` name with the system's resolver only, so
  it runs in a private mount namespace where a hosts file the benchmark rewrites is
  ``/etc/hosts`` (``unshare``, needs root; the machine's files are not touched);
- ``current``: this tree, replicas without a drain (HETSERVE_TRITON_DRAIN_S=0: a Triton that
  stops at once on SIGTERM; the gateway's retries and channel handling alone keep requests);
- ``current-drain``: this tree, replicas with their default drain.

This tree's gateway follows the benchmark's DNS server (``dns://127.0.0.1:PORT/NAME:PORT``);
``--resolver hosts`` makes it read the hosts file like the baseline instead.

Reproduce: ``make bench-rolling`` (``.venv/bin/python bench/rolling_replacement.py``);
``--runs N`` per order and configuration (default 3), ``--clients`` (8). Writes
``bench/results/rolling-replacement-<machine>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hetgateway.settings import DEFAULT_DRAIN_S
from loopback_dns import LoopbackDns
from loopback_target import fashion_images, free_port
from provenance import REPO_ROOT, write_result
from replica_fleet import (
    ORDERS,
    HostsFile,
    ReplicaFleet,
    SteadyLoad,
    one_image_body,
    private_hosts_command,
    replace,
    wait_counted,
)

ISSUE_REF = "a74dc94"
"""main when issue 27 was measured (before issue 21's gateway rewrite)."""
BASELINE_REF = "5e3c744"
"""main just before issue 27's drain work: NOT_FOUND already retried, channels closed at once."""
CONFIGS = ("issue", "baseline", "current", "current-drain")
REPLICA_DRAIN_S: dict[str, float | None] = {"issue": None, "baseline": None, "current": 0.0,
                                            "current-drain": None}
"""HETSERVE_TRITON_DRAIN_S per configuration (None: unset, the tree's own default)."""
REPLICA_DRAIN_SAID = {"issue": "none (no drain before this work)",
                      "baseline": "none (no drain before this work)", "current": "0 s",
                      "current-drain": f"the default, {DEFAULT_DRAIN_S:g} s"}
SETTLE_S = 1.0
WARMUP_S = 2.0
GATEWAY_READY_S = 120.0
GATEWAY_STOP_S = 30.0
BENCHMARK = "rolling-replacement"


@dataclass(frozen=True)
class Tree:
    """Where a configuration's ``hetgateway`` comes from: this checkout, or a copy of
    another commit put first on PYTHONPATH."""

    label: str
    commit: str
    env: dict[str, str]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="replacements per order")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--baseline", default=BASELINE_REF, help="the baseline's git ref")
    parser.add_argument("--resolver", choices=("dns", "hosts"), default="dns",
                        help="how this tree's gateway finds the replicas")
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repo")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configurations: {sorted(unknown)}")
    body = one_image_body(fashion_images(limit=1)[0])
    cells: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="hetserve-rolling-") as tmp:
        for config in configs:
            workdir = Path(tmp) / config
            workdir.mkdir()
            refs = {"issue": ISSUE_REF, "baseline": args.baseline}
            tree = (other_tree(config, refs[config], workdir) if config in refs
                    else Tree("this tree", _git("rev-parse", "--short", "HEAD"), {}))
            replica_drain = REPLICA_DRAIN_S[config]
            hosts = config in refs or args.resolver == "hosts"
            print(f"== {config}: {tree.label} ({tree.commit}), replicas' drain "
                  f"{REPLICA_DRAIN_SAID[config]}, "
                  f"{'hosts file' if hosts else 'DNS server'}", flush=True)
            runs = measure(args, body, workdir, tree, replica_drain=replica_drain,
                           hosts=hosts)
            cells.extend(summarise(config, tree, runs, hosts=hosts))
    report = {
        "settings": {
            "clients": args.clients, "runs_per_order": args.runs, "orders": list(ORDERS),
            "dns_first_sigterm_after_s": 0.5, "sigterm_first_dns_after_s": 1.5,
            "settle_s": SETTLE_S, "issue_ref": ISSUE_REF, "baseline_ref": args.baseline,
            "gateway_settings": "defaults, one worker (name resolved every 1 s)",
        },
        "cells": cells,
    }
    print_table(cells)
    write_result(report, BENCHMARK, measures=["model_repo"])


def measure(args: argparse.Namespace, body: dict[str, object], workdir: Path, tree: Tree, *,
            replica_drain: float | None, hosts: bool) -> list[dict[str, object]]:
    """Start the pool and the gateway, run the replacements under load; one dict per run."""
    hosts_file = HostsFile(workdir / "hosts") if hosts else None
    runs: list[dict[str, object]] = []
    with LoopbackDns() as dns, ReplicaFleet(args.model_repository, workdir, dns,
                                            drain_s=replica_drain, hosts=hosts_file,
                                            env=tree.env) as fleet:
        pool = [fleet.start(), fleet.start()]
        fleet.wait_ready(*pool)
        fleet.publish(*pool)
        target = fleet.system_target() if hosts_file else fleet.target()
        with running_gateway(target, tree=tree, hosts=hosts_file, workdir=workdir) as url:
            wait_counted(url, 2)
            with SteadyLoad(f"{url}/v1/predict", body, clients=args.clients) as load:
                time.sleep(WARMUP_S)
                for index in range(args.runs * len(ORDERS)):
                    order = ORDERS[index % len(ORDERS)]
                    old = pool.pop(0)
                    replacement = replace(fleet, url, old, order=order)
                    pool.append(replacement.new)
                    exit_code = old.wait_exit()
                    time.sleep(SETTLE_S)
                    window = load.since(replacement.started_s)
                    failures = load.failures(window)
                    runs.append({"order": order, "requests": len(window),
                                 "failed": sum(failures.values()), "failures": dict(failures),
                                 "seconds": round(time.monotonic() - replacement.started_s, 1),
                                 "old_replica_exit_code": exit_code})
                    print(f"  run {index + 1}: {order:13s} {len(window):6d} requests, "
                          f"{sum(failures.values())} failed {dict(failures) or ''}", flush=True)
    return runs


def summarise(config: str, tree: Tree, runs: list[dict[str, object]], *,
              hosts: bool) -> list[dict[str, object]]:
    cells = []
    for order in ORDERS:
        mine = [run for run in runs if run["order"] == order]
        failures: Counter[str] = Counter()
        for run in mine:
            failures.update(run["failures"])
        cells.append({
            "config": config, "order": order, "code": f"{tree.label} ({tree.commit})",
            "replica_drain": REPLICA_DRAIN_SAID[config],
            "resolver": "hosts file" if hosts else "DNS server",
            "runs": len(mine),
            "requests": sum(int(run["requests"]) for run in mine),
            "failed": sum(int(run["failed"]) for run in mine),
            "failed_per_run": [run["failed"] for run in mine],
            "failures": dict(failures),
            "run_details": mine,
        })
    return cells


def print_table(cells: list[dict[str, object]]) -> None:
    print(f"\n{'configuration':15s} {'order':14s} {'runs':>4s} {'requests':>9s} {'failed':>7s}"
          "  per run")
    for cell in cells:
        print(f"{cell['config']:15s} {cell['order']:14s} {cell['runs']:4d} "
              f"{cell['requests']:9,d} {cell['failed']:7d}  {cell['failed_per_run']}"
              f"  {cell['failures'] or ''}")


def other_tree(config: str, ref: str, workdir: Path) -> Tree:
    """``server/src`` and ``contract/src`` of ``ref``, unpacked under ``workdir``, first on
    PYTHONPATH (checked: ``hetgateway`` imports from there)."""
    root = workdir / f"{config}-tree"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref,
                              "server/src", "contract/src"], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    paths = [str(root / "server" / "src"), str(root / "contract" / "src")]
    env = {"PYTHONPATH": os.pathsep.join(paths)}
    where = subprocess.run([sys.executable, "-c", "import hetgateway; print(hetgateway.__file__)"],
                           env={**os.environ, **env}, check=True, capture_output=True, text=True)
    if not where.stdout.strip().startswith(str(root)):
        raise RuntimeError(f"{ref}'s hetgateway did not come first: {where.stdout}")
    return Tree(f"main at {ref}", _git("rev-parse", "--short", ref), env)


@contextlib.contextmanager
def running_gateway(target: str, *, tree: Tree, hosts: HostsFile | None,
                    workdir: Path) -> Iterator[str]:
    """``hetgateway gateway`` of ``tree`` (one worker) on a free port, ready; in a private
    mount namespace reading ``hosts`` as ``/etc/hosts`` when given; stopped after."""
    port = free_port()
    env = {**os.environ, **tree.env, "HETSERVE_TRITON_GRPC_URL": target,
           "HETSERVE_PORT": str(port), "HETSERVE_HOST": "127.0.0.1", "HETSERVE_WORKERS": "1",
           "HETSERVE_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "hetgateway.cli", "gateway"]
    if hosts is not None:
        command = private_hosts_command(hosts, command)
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "gateway.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_ready(url, process, workdir / "gateway.log")
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # no drain: nothing sends to it any more
        try:
            process.wait(timeout=GATEWAY_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + GATEWAY_READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz",
                                                                   timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"gateway not ready in {GATEWAY_READY_S} s")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
