"""``hetclient``: ask a hetserve gateway from the shell.

Typical usage::

    hetclient predict shirt.png boot.png --model fashion_het --top-k 3
    hetclient predict shirt.png --coverage 0.95 --risk 0.02   # a calibrated model's levels
    hetclient predict shirt.png --json | jq '.results[0].uncertainty'
    hetclient models
    hetclient model fashion_het          # its calibration (or why it has none) and its card
    hetclient audit manifest.csv --model fashion_het --output audit.csv   # find wrong labels
    hetclient audit photos/ --output audit.csv        # photos/<label>/<image>

The gateway URL comes from ``--url``, else ``$HETSERVE_URL``, else ``http://127.0.0.1:8080``;
an API key from ``$HETSERVE_API_KEY``. Errors print one line on stderr (never a traceback) and
exit with a code from ``ExitCode``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path

from hetcontract import ModelDetail, ModelList
from hetcontract.audit import DEFAULT_THRESHOLD
from hetcontract.audit_report import summary_text

from hetclient.audit import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    AuditOptions,
    audit,
    progress_stream,
    read_labelled_images,
)
from hetclient.base_client import DEFAULT_TIMEOUT_S, DEFAULT_TOP_K
from hetclient.client import Client
from hetclient.errors import APIConnectionError, APIError, APIStatusError, InvalidInputError
from hetclient.retries import DEFAULT_MAX_RETRIES
from hetclient.table import format_table

URL_ENV = "HETSERVE_URL"
API_KEY_ENV = "HETSERVE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8080"


class ExitCode(IntEnum):
    OK = 0
    API_ERROR = 1
    """The gateway answered with an error status (4xx/5xx) or an answer off the contract."""
    USAGE = 2
    """Bad command line (argparse's own code)."""
    CONNECTION_ERROR = 3
    """No answer: gateway unreachable or timed out."""
    INPUT_ERROR = 4
    """An input the SDK cannot send (missing file, unknown type)."""
    INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetclient", description="Ask a hetserve gateway for predictions with uncertainty."
    )
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"gateway base URL (env {URL_ENV}, default {DEFAULT_URL})",
    )
    connection.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per attempt"
    )
    connection.add_argument(
        "--max-retries", type=int, default=DEFAULT_MAX_RETRIES, help="retries on 429/503/no answer"
    )
    connection.add_argument("--json", action="store_true", help="print the JSON answer")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict", parents=[connection], help="top-k classes and uncertainty for images"
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--model", default=None, help="model name (default: the gateway's)")
    predict.add_argument(
        "--top-k", type=_positive_int, default=None,
        help=f"classes per image (default: the gateway's, min({DEFAULT_TOP_K}, the model's))",
    )
    predict.add_argument(
        "--coverage", type=_level, default=None,
        help="prediction-set coverage, one the model offers (default: the model's)")
    predict.add_argument(
        "--risk", type=_level, default=None,
        help="error among accepted answers, one the model offers (default: the model's)")

    commands.add_parser("models", parents=[connection], help="list the served models")
    detail = commands.add_parser(
        "model", parents=[connection],
        help="one model: its decisions' calibration (or why it has none) and its card")
    detail.add_argument("name", help="model name")

    audit = commands.add_parser(
        "audit", parents=[connection],
        help="find the wrong labels of a labelled image set (manifest.csv or DIR/<label>/)",
    )
    audit.add_argument("source", metavar="MANIFEST.csv|DIR",
                       help="a CSV of path,label (id or class name) or a folder per class")
    audit.add_argument("--model", default=None, help="model name (default: the gateway's)")
    audit.add_argument("--output", "-o", type=Path, required=True, metavar="OUT.csv",
                       help="the audit CSV; OUT.summary.json and OUT.html are written beside")
    audit.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                       help=f"images per request (default {DEFAULT_BATCH_SIZE})")
    audit.add_argument("--concurrency", type=_positive_int, default=DEFAULT_CONCURRENCY,
                       help=f"requests in flight (default {DEFAULT_CONCURRENCY})")
    audit.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                       help=f"flag when P(wrong) exceeds this (default {DEFAULT_THRESHOLD})")
    audit.add_argument("--restart", action="store_true",
                       help="discard the answers an interrupted run left, start over")
    audit.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _level(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("must lie strictly between 0 and 1, e.g. 0.95")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def run(args: argparse.Namespace) -> str:
    """Carry out the parsed command; the text to print. Raises the SDK's errors."""
    with Client(
        args.url,
        timeout_s=args.timeout,
        max_retries=args.max_retries,
        api_key=os.environ.get(API_KEY_ENV) or None,
    ) as client:
        if args.command == "audit":
            return _audit(args)
        if args.command == "predict":
            answer = client.predict(args.images, model=args.model, top_k=args.top_k,
                                    coverage=args.coverage, risk=args.risk)
            if args.json:
                return answer.model_dump_json(indent=2)
            return format_table(args.images, answer)
        if args.command == "model":
            detail = client.model(args.name)
            return detail.model_dump_json(indent=2) if args.json else _format_model(detail)
        listing = client.models()
        if args.json:
            return listing.model_dump_json(indent=2)
        return _format_models(listing)


def _audit(args: argparse.Namespace) -> str:
    images = read_labelled_images(args.source)
    options = AuditOptions(
        url=args.url, output=args.output, model=args.model, batch_size=args.batch_size,
        concurrency=args.concurrency, threshold=args.threshold, restart=args.restart,
        timeout_s=args.timeout, max_retries=args.max_retries,
        api_key=os.environ.get(API_KEY_ENV) or None,
        progress=None if args.no_progress else progress_stream(),
    )
    result = asyncio.run(audit(images, options))
    if args.json:
        return result.summary.model_dump_json(indent=2)
    lines = [summary_text(result.summary)]
    if result.resumed:
        lines.append(f"({result.resumed} answers reused from an interrupted run)")
    lines += [f"refused by the gateway, not audited: {path}: {reason}"
              for path, reason in result.failed]
    lines.append(f"wrote {result.files.csv}, {result.files.summary_json}, {result.files.page}")
    return "\n".join(lines)


def _format_models(listing: ModelList) -> str:
    lines = []
    for m in listing.models:
        state = "ready" if m.ready else "NOT READY"
        default = "  (default)" if m.name == listing.default_model else ""
        lines.append(f"{m.name}  v{m.version}  {m.head}  {m.num_classes} classes  {state}{default}")
    return "\n".join(lines)


def _format_model(detail: ModelDetail) -> str:
    """A model's summary and, in words, the decisions its answers carry."""
    lines = [f"{detail.name}  v{detail.version}  {detail.head}  {detail.num_classes} classes  "
             f"{'ready' if detail.ready else 'NOT READY'}"]
    support = detail.decisions
    if support is None:
        return "\n".join([*lines, "decisions: not reported by this gateway"])
    if not support.available:
        return "\n".join([*lines, f"decisions: none ({support.reason})"])
    coverages = ", ".join(f"{100 * c:g} %" for c in support.coverages)
    risks = ", ".join(f"{100 * r:g} %" for r in support.risks)
    lines += [
        f"prediction sets: coverage {coverages} (default {100 * support.default_coverage:g} %)",
        f"accept or review: error among accepted at most {risks} (default "
        f"{100 * support.default_risk:g} %), each with probability at least "
        f"{100 * (1 - support.delta):g} %",
        f"calibration: {support.reason}",
        f"accuracy on the calibration images: {100 * support.calibrated_accuracy:.1f} % "
        f"(watched without labels by hetserve_estimated_accuracy, score "
        f"{support.estimated_accuracy_score})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hetclient`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except InvalidInputError as err:
        return _fail(f"invalid input: {err}", ExitCode.INPUT_ERROR)
    except APIStatusError as err:
        return _fail(
            f"the gateway answered {err.status_code} ({err.code or 'error'}): {err.message}"
            f" [request id {err.request_id}]",
            ExitCode.API_ERROR,
        )
    except APIConnectionError as err:
        return _fail(f"{err} (is the gateway running at {args.url}?)", ExitCode.CONNECTION_ERROR)
    except APIError as err:
        return _fail(str(err), ExitCode.API_ERROR)
    except ValueError as err:  # a malformed --url, --timeout or --max-retries
        return _fail(str(err), ExitCode.USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:  # the reader left (``hetclient predict x.png | head``): not an error
        _silence_stdout()
    return ExitCode.OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again on the
    closed pipe (the recipe of Python's ``signal`` documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _fail(message: str, code: ExitCode) -> int:
    print(f"hetclient: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
