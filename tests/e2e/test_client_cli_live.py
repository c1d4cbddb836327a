"""The ``hetclient`` command as a user runs it (a subprocess) against the live gateway."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hetcontract import PredictResponse
from PIL import Image

pytestmark = pytest.mark.e2e

NUM_IMAGES = 3
TOP_K = 2
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def image_files(fashion_mnist, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cli-images")
    paths = []
    for index in range(NUM_IMAGES):
        path = folder / f"test{index}.png"
        buffer = io.BytesIO()
        Image.fromarray(fashion_mnist.images[index]).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def _hetclient(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``hetclient`` console script (``python -m hetclient.cli`` without it)."""
    script = shutil.which("hetclient", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "hetclient.cli"]
    env = {k: v for k, v in os.environ.items() if k != "HETSERVE_URL"}
    if url is not None:
        env["HETSERVE_URL"] = url
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env
    )


def test_predict_prints_a_table_row_per_class_with_the_cards_labels(
    gateway_url, image_files, model_cards
):
    name, card = sorted(model_cards.items())[0]
    done = _hetclient(
        "predict",
        *map(str, image_files),
        "--model",
        name,
        "--top-k",
        str(TOP_K),
        "--url",
        gateway_url,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["image", "rank", "label"]
    body = lines[1:-1]
    assert len(body) == NUM_IMAGES * TOP_K
    for index, path in enumerate(image_files):
        first = body[index * TOP_K]
        assert first.startswith(str(path))
        assert any(label in first for label in card.labels)
    assert lines[-1].startswith(f"model {name} v")


def test_predict_json_is_the_gateways_answer_and_valid_json(gateway_url, image_files, model_cards):
    name = sorted(model_cards)[0]
    done = _hetclient("predict", str(image_files[0]), "--model", name, "--json", url=gateway_url)
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    answer = PredictResponse.model_validate_json(done.stdout)
    assert answer.model.name == name and len(answer.results) == 1


def test_the_url_is_taken_from_hetserve_url(gateway_url, image_files):
    done = _hetclient("models", url=gateway_url)
    assert done.returncode == 0, done.stderr
    assert "ready" in done.stdout


def test_an_unknown_model_is_one_error_line_and_exit_status_1(gateway_url, image_files):
    done = _hetclient("predict", str(image_files[0]), "--model", "no_such_model", url=gateway_url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("hetclient: error: the gateway answered 404 (model_not_found)")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_file_that_is_not_an_image_is_refused_by_the_gateway_with_415(
    gateway_url, tmp_path, model_cards
):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    done = _hetclient("predict", str(text), "--model", sorted(model_cards)[0], url=gateway_url)
    assert done.returncode == 1
    assert "415" in done.stderr and "Traceback" not in done.stderr
