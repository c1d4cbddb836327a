"""Folding a py-spy profile of the gateway (``bench/gateway_profile.py``, ``make
bench-gateway-profile``): each busy sample counts once for the layer of its innermost frame
and for every stage its stack passes through, whatever line of a function it was on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCH = REPO_ROOT / "bench" / "gateway_profile.py"

ROOT = "Runner.run (asyncio/runners.py:118)"
ROUTE = ("FastAPI.__call__ (fastapi/applications.py:1224);"
         "_predict (hetgateway/routers/predict.py:105)")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gateway_profile", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))  # its siblings, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH.parent))


def test_a_sample_counts_for_the_layer_of_its_innermost_frame(bench):
    profile = bench.fold_profile([
        f"{ROOT};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:522) 6",
        f"{ROOT};{ROUTE};DataPlane._preprocess (hetgateway/data_plane.py:217);"
        "normalise (hetgateway/preprocessing.py:115) 3",
        f"{ROOT};UnaryUnaryCall._invoke (grpc/aio/_call.py:595) 8",
        f"{ROOT};uuid4 (uuid.py:723) 1",
        f"{ROOT} 2",
    ])
    assert profile["samples"] == 20
    layers = profile["layers"]
    assert layers["http_server"] == pytest.approx(0.30)
    assert layers["gateway_code"] == pytest.approx(0.15)   # numpy inside counts here
    assert layers["grpc_client"] == pytest.approx(0.40)
    assert layers["standard_library"] == pytest.approx(0.05)
    assert layers["event_loop"] == pytest.approx(0.10)
    assert sum(layers.values()) == pytest.approx(1.0)
    assert profile["framework_share"] == pytest.approx(0.80)


def test_a_stage_counts_every_sample_under_it_on_any_line_of_its_function(bench):
    preprocess = "DataPlane._preprocess (hetgateway/data_plane.py:{})"
    profile = bench.fold_profile([
        f"{ROOT};{ROUTE};{preprocess.format(217)};open (PIL/Image.py:3704) 4",
        f"{ROOT};{ROUTE};{preprocess.format(219)} 1",
        f"{ROOT};{ROUTE};answer_json (hetgateway/answer.py:72) 2",
        f"{ROOT};{ROUTE};Response.__call__ (starlette/responses.py:171) 3",
    ])
    assert profile["stages"]["preprocess"] == pytest.approx(0.5)
    assert profile["stages"]["shape_answer"] == pytest.approx(0.2)
    assert profile["stages"]["send_answer"] == pytest.approx(0.3)
    assert profile["stages"]["triton_call"] == 0.0
    assert profile["layers"]["image_decoding"] == pytest.approx(0.4)
    top = profile["top_functions"][0]
    assert top == {"function": "open (PIL/Image.py)", "share": pytest.approx(0.4)}


def test_lines_that_are_not_samples_are_skipped_and_an_empty_profile_refused(bench):
    assert bench.fold_profile(["", "not a sample", f"{ROOT} 1"])["samples"] == 1
    with pytest.raises(ValueError, match="no samples"):
        bench.fold_profile(["", "garbage line"])
