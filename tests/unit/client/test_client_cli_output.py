"""The ``hetclient`` command: its table, its JSON, its error lines and exit codes.

A tiny real HTTP server on loopback plays the gateway with fixed answers, so the command runs
exactly as a user runs it (``main(argv)``, its own ``Client``)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hetclient.cli import DEFAULT_URL, URL_ENV, ExitCode, build_parser, main
from hetclient.table import HEADER, WITHHELD_TEXT, decision_words, format_table
from hetcontract import (
    Decision,
    DecisionSupport,
    ModelDetail,
    PredictionSet,
    PredictResponse,
    SetMember,
)


class _FixedAnswers(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        status, body = self.answers[self.path]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-ID", "rid-cli")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _detail(name: str, support: DecisionSupport) -> bytes:
    return ModelDetail(name=name, version="1", ready=True, head="het", num_classes=10,
                       labels=[str(i) for i in range(10)], model_card={},
                       decisions=support).model_dump_json().encode()


@pytest.fixture
def fake_gateway(make_answer) -> Iterator[str]:
    _FixedAnswers.answers = {
        "/v1/predict": (200, make_answer(2).model_dump_json().encode()),
        "/v1/models/calibrated": (200, _detail("calibrated", DecisionSupport(
            available=True, reason="calibrated on 6000 noisy-label images (held-out split) on "
            "2026-01-01; the guarantees hold for labels like those",
            coverages=[0.8, 0.9], default_coverage=0.9, risks=[0.02, 0.05], default_risk=0.05,
            delta=0.1, label_source="noisy", estimated_accuracy_score="top_ratio",
            calibrated_accuracy=0.756))),
        "/v1/models/plain": (200, _detail("plain", DecisionSupport(
            available=False, reason="model 'plain' was exported without labelled calibration "
            "images"))),
        "/v1/models/nope/predict": (
            404,
            json.dumps(
                {"error": {"code": "model_not_found", "message": "no model 'nope'"}}
            ).encode(),
        ),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def images(tmp_path):
    paths = [tmp_path / "shirt.png", tmp_path / "top.png"]
    for path in paths:
        path.write_bytes(b"\x89PNG not really")
    return [str(p) for p in paths]


def test_table_has_a_row_per_class_with_entropy_and_confusable_classes(make_answer):
    table = format_table(["a.png", "b.png"], make_answer(2))
    lines = table.splitlines()
    assert lines[0].split()[:5] == list(HEADER[:5])
    first = lines[1].split()
    assert first[:5] == ["a.png", "1", "Shirt", "0.580", "0.930"]
    assert "Pullover 0.71" in lines[1]
    assert lines[2].split() == ["2", "T-shirt/top", "0.310", "Shirt", "0.62"]
    assert lines[3].startswith("b.png")
    assert lines[-1] == "model fashion_het v1: 10 classes, 1000 MC samples, temperature 1.5"


def test_table_says_where_the_model_withheld_a_class_s_shares(make_answer):
    answer = make_answer(1)
    uncertainty = answer.results[0].uncertainty
    withheld = uncertainty.confusable[1].model_copy(update={"confused_with": [],
                                                            "withheld": True})
    result = answer.results[0].model_copy(update={"uncertainty": uncertainty.model_copy(
        update={"confusable": [uncertainty.confusable[0], withheld]})})
    lines = format_table(["a.png"], answer.model_copy(update={"results": [result]})).splitlines()
    assert "Pullover 0.71" in lines[1]
    assert lines[2].endswith(WITHHELD_TEXT)


def _decided(answer: PredictResponse, *accept: bool) -> PredictResponse:
    """``answer`` with a set and a decision on each result (``accept`` per result)."""
    results = [
        result.model_copy(update={
            "prediction_set": PredictionSet(coverage=0.9, classes=[
                SetMember(class_id=6, label="Shirt"), SetMember(class_id=0, label="T-shirt/top")]
                if not ok else [SetMember(class_id=6, label="Shirt")]),
            "decision": Decision(accept=ok, risk=0.05, delta=0.1, score="max_probability"),
        })
        for result, ok in zip(answer.results, accept, strict=True)
    ]
    return answer.model_copy(update={"results": results})


def test_table_of_a_calibrated_model_says_the_set_and_the_decision_in_words(make_answer):
    table = format_table(["a.png", "b.png"], _decided(make_answer(2), False, True))
    lines = table.splitlines()
    assert "could be (90 % coverage)" in lines[0] and lines[0].rstrip().endswith("decision")
    assert lines[1].rstrip().endswith("Shirt, T-shirt/top        send to review")
    assert lines[3].rstrip().endswith("Shirt                     accept at 5 % risk")
    assert "review" not in lines[2] and "accept" not in lines[4]


def test_an_empty_set_reads_as_none_and_uncalibrated_answers_keep_the_plain_table(
    make_answer,
):
    answer = _decided(make_answer(1), False)
    empty = answer.results[0].model_copy(update={
        "prediction_set": PredictionSet(coverage=0.9, classes=[])})
    assert decision_words(empty) == ("none (unlike the calibration images)", "send to review")
    assert decision_words(make_answer(1).results[0]) == ("", "")
    assert "decision" not in format_table(["a.png"], make_answer(1)).splitlines()[0]


def test_model_info_says_the_calibration_in_words(fake_gateway, capsys):
    assert main(["model", "calibrated", "--url", fake_gateway]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "prediction sets: coverage 80 %, 90 % (default 90 %)" in out
    assert ("accept or review: error among accepted at most 2 %, 5 % (default 5 %), each "
            "with probability at least 90 %") in out
    assert "calibrated on 6000 noisy-label images" in out
    assert "accuracy on the calibration images: 75.6 %" in out


def test_model_info_of_an_uncalibrated_model_says_why_there_are_no_decisions(
    fake_gateway, capsys
):
    assert main(["model", "plain", "--url", fake_gateway]) == ExitCode.OK
    assert "decisions: none (model 'plain' was exported without labelled calibration images)" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("level", ["--coverage=1.5", "--risk=0", "--risk=abc"])
def test_levels_outside_zero_and_one_are_usage_errors(images, level, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["predict", images[0], level])
    assert exited.value.code == ExitCode.USAGE


def test_table_refuses_names_that_do_not_match_the_results(make_answer):
    with pytest.raises(ValueError, match="2 names for 1 results"):
        format_table(["a.png", "b.png"], make_answer(1))


def test_predict_prints_the_table(fake_gateway, images, capsys):
    assert main(["predict", *images, "--url", fake_gateway]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == [images[0], "1", "Shirt"]


def test_predict_json_prints_the_answer_as_valid_json(fake_gateway, images, capsys, make_answer):
    assert main(["predict", *images, "--url", fake_gateway, "--json"]) == ExitCode.OK
    assert PredictResponse.model_validate_json(capsys.readouterr().out) == make_answer(2)


def test_an_api_error_prints_one_line_with_status_code_and_request_id(fake_gateway, images, capsys):
    code = main(["predict", images[0], "--model", "nope", "--url", fake_gateway])
    captured = capsys.readouterr()
    assert code == ExitCode.API_ERROR
    assert captured.out == ""
    assert captured.err == (
        "hetclient: error: the gateway answered 404 (model_not_found): no model 'nope'"
        " [request id rid-cli]\n"
    )


def test_an_unreachable_gateway_exits_with_the_connection_error_code(images, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["predict", images[0], "--url", f"http://127.0.0.1:{port}", "--max-retries", "0"])
    err = capsys.readouterr().err
    assert code == ExitCode.CONNECTION_ERROR
    assert err.startswith("hetclient: error: cannot reach") and "Traceback" not in err


def test_a_missing_image_file_exits_with_the_input_error_code(capsys):
    assert main(["predict", "/no/such.png"]) == ExitCode.INPUT_ERROR
    assert "cannot read image file '/no/such.png'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["predict"], ["predict", "x", "--top-k", "0"], ["frobnicate"]])
def test_bad_command_lines_exit_with_the_usage_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == ExitCode.USAGE


def test_the_url_comes_from_the_environment_else_the_default(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert build_parser().parse_args(["models"]).url == DEFAULT_URL
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9999")
    assert build_parser().parse_args(["models"]).url == "http://127.0.0.1:9999"
    assert build_parser().parse_args(["models", "--url", "http://x:1"]).url == "http://x:1"
