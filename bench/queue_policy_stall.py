"""Why the shipped models carry no Triton queue policy: the same load on the same model, with and
without a ``default_queue_policy``, against Triton 2.51 (the embedded CPU build).

Starts two embedded Tritons on free loopback ports, both serving the repository derived from
``model_repo/`` exactly as ``hetgateway serve`` does; the second gets, in each model's dynamic
batcher, the bounded rejecting queue the exporter used to write (``max_queue_size`` 256, 5 s
timeout, REJECT). Then runs alternating rounds of direct ``tritonclient.grpc.aio`` inference
(one preprocessed Fashion-MNIST image per request, fixed concurrency) at each and prints, per
variant, the median over rounds of throughput, p50, p99, the slowest call and the calls slower
than ``STALL_MS``, and the ratio of throughputs (with policy / without). Results go to
``bench/results/queue-policy-<machine>.json``.

Measured finding (README, "Speed and load"): with any queue policy, Triton 2.51's dynamic batcher
now and then leaves queued requests until its 500 ms idle wake-up, so p99 ~510 ms and throughput
falls 2-5x at 16 concurrent requests; without one, no call takes over 100 ms.

Reproduce: ``.venv/bin/python bench/queue_policy_stall.py`` (options: ``--concurrency 16
--requests 1000 --rounds 5 --model fashion_het``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio
from google.protobuf import text_format
from hetcontract import INPUT_NAME, MODEL_CARD_FILENAME, ModelCard
from hetgateway.answer import ANSWER_OUTPUTS
from hetgateway.embedded.repository import read_config
from loopback_target import embedded_triton, fashion_images, load, preprocess
from provenance import write_result
from tritonclient.grpc import InferInput, InferRequestedOutput, model_config_pb2

REPO_ROOT = Path(__file__).resolve().parents[1]
STALL_MS = 250.0
"""A call slower than this counts as stalled (the batcher's idle wake-up is 500 ms)."""
POLICY = model_config_pb2.ModelQueuePolicy(
    timeout_action=model_config_pb2.ModelQueuePolicy.REJECT,
    default_timeout_microseconds=5_000_000,
    allow_timeout_override=True,
    max_queue_size=256,
)
VARIANTS = ("no_policy", "with_policy")
MEASURES = ["server/src/hetgateway/embedded", "model_repo/fashion_het",
            "bench/queue_policy_stall.py"]
"""What the figures measure (the result's provenance): the embedded Triton, the model, the
load generator."""
WARMUP_REQUESTS = 100
NUM_IMAGES = 256


def main() -> int:
    args = parse_args()
    repository = Path(args.model_repository)
    card = ModelCard.model_validate_json((repository / args.model / MODEL_CARD_FILENAME)
                                         .read_text())
    tensors = preprocess(fashion_images(limit=NUM_IMAGES), card)
    with tempfile.TemporaryDirectory(prefix="hetserve-queue-") as tmp, ExitStack() as stack:
        urls = {}
        for variant in VARIANTS:
            edit = add_queue_policy if variant == "with_policy" else None
            triton = stack.enter_context(embedded_triton(repository, Path(tmp), name=variant,
                                                         edit=edit))
            urls[variant] = triton.grpc_url
        rounds = asyncio.run(run_rounds(args, urls, tensors))
    report = summarise(args, rounds)
    print_report(report)
    write_result(report, "queue-policy", measures=MEASURES, machine=args.machine)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default=str(REPO_ROOT / "model_repo"))
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per compared path, alternating")
    parser.add_argument("--machine", default=f"{platform.machine()}-{os.cpu_count()}cpu",
                        help="name of this machine in the results file name")
    return parser.parse_args()


def add_queue_policy(repository: Path) -> None:
    """Give every dynamic-batching model in ``repository`` the bounded rejecting ``POLICY``."""
    for path in repository.glob("*/config.pbtxt"):
        config = read_config(path)
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.default_queue_policy.CopyFrom(POLICY)
            path.write_text(text_format.MessageToString(config))


async def run_rounds(args: argparse.Namespace, urls: dict[str, str],
                     tensors: np.ndarray) -> list[dict]:
    outputs = [InferRequestedOutput(name) for name in ANSWER_OUTPUTS]
    clients = {variant: grpcaio.InferenceServerClient(url) for variant, url in urls.items()}

    def sender(client):
        async def send(i: int) -> None:
            image = tensors[i % len(tensors)][None]
            infer_input = InferInput(INPUT_NAME, list(image.shape), "FP32")
            infer_input.set_data_from_numpy(image)
            await client.infer(args.model, [infer_input], outputs=outputs, client_timeout=60)
        return send

    rounds = []
    try:
        for client in clients.values():
            await load(sender(client), WARMUP_REQUESTS, args.concurrency)
        for index in range(args.rounds):
            for variant, client in clients.items():
                seconds, latencies = await load(sender(client), args.requests, args.concurrency)
                ms = np.asarray(latencies) * 1e3
                rounds.append({
                    "variant": variant, "round": index, "throughput_rps": len(ms) / seconds,
                    "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                    "max_ms": float(ms.max()), "stalled_calls": int((ms > STALL_MS).sum()),
                })
                print(f"  round {index} {variant:12s} {rounds[-1]['throughput_rps']:8.1f} req/s "
                      f"p99 {rounds[-1]['p99_ms']:7.1f} ms", flush=True)
    finally:
        for client in clients.values():
            await client.close()
    return rounds


def summarise(args: argparse.Namespace, rounds: list[dict]) -> dict:
    """Medians over rounds per variant; the throughput ratio is the median of paired ratios."""
    medians = {}
    for variant in VARIANTS:
        mine = [r for r in rounds if r["variant"] == variant]
        medians[variant] = {key: float(np.median([r[key] for r in mine]))
                            for key in ("throughput_rps", "p50_ms", "p99_ms", "max_ms",
                                        "stalled_calls")}
        medians[variant]["stalled_calls_total"] = sum(r["stalled_calls"] for r in mine)
    paired = [w["throughput_rps"] / n["throughput_rps"]
              for n, w in zip(rounds[0::2], rounds[1::2], strict=True)]
    return {
        "benchmark": "direct Triton 2.51 load, with vs without a dynamic-batcher queue policy",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": args.machine, "cpu_count": os.cpu_count(), "model": args.model,
        "concurrency": args.concurrency, "requests_per_round": args.requests,
        "rounds_per_variant": args.rounds, "stall_ms": STALL_MS,
        "policy": text_format.MessageToString(POLICY, as_one_line=True),
        "variants": medians, "throughput_ratio_with_over_without": float(np.median(paired)),
        "paired_ratios": paired, "rounds": rounds,
        "command": (f".venv/bin/python bench/queue_policy_stall.py --model {args.model} "
                    f"--concurrency {args.concurrency} --requests {args.requests} "
                    f"--rounds {args.rounds} --machine {args.machine}"),
    }


def print_report(report: dict) -> None:
    print(f"model {report['model']}, concurrency {report['concurrency']}, "
          f"{report['rounds_per_variant']} x {report['requests_per_round']} requests per variant; "
          f"medians over rounds")
    print(f"{'variant':12s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} "
          f"{'calls > ' + str(int(report['stall_ms'])) + ' ms (all rounds)':>28s}")
    for variant, row in report["variants"].items():
        print(f"{variant:12s} {row['throughput_rps']:8.1f} {row['p50_ms']:8.2f} "
              f"{row['p99_ms']:8.2f} {row['max_ms']:8.1f} {row['stalled_calls_total']:28d}")
    print(f"throughput with policy / without: {report['throughput_ratio_with_over_without']:.2f} "
          f"(paired rounds: {', '.join(f'{r:.2f}' for r in report['paired_ratios'])})")
    print(f"reproduce: {report['command']}")


if __name__ == "__main__":
    sys.exit(main())
