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
from hetclient.table import HEADER, WITHHELD_TEXT, format_table
from hetcontract import PredictResponse


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


@pytest.fixture
def fake_gateway(make_answer) -> Iterator[str]:
    _FixedAnswers.answers = {
        "/v1/predict": (200, make_answer(2).model_dump_json().encode()),
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
