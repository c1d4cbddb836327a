"""The label audit against the real gateway and Triton: ``hetclient audit`` finds labels that
are wrong, and the predict API's ``include`` returns the full and the noise-free probabilities.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from hetcontract.audit import read_audit_csv
from PIL import Image

pytestmark = pytest.mark.e2e

IMAGES = 80
FLIPPED = 8
"""Of the first IMAGES test images, every tenth gets the label of a class of the other kind
(clothing <-> footwear or bag): wrong labels nothing in the data explains."""
OTHER_KIND = {0: 7, 1: 9, 2: 5, 3: 8, 4: 7, 5: 0, 6: 9, 7: 2, 8: 1, 9: 6}
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
          "Bag", "Ankle boot")
CLI_TIMEOUT_S = 300


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def labelled_set(fashion_mnist, tmp_path_factory) -> tuple[Path, set[str]]:
    """A manifest (class names, relative paths) of IMAGES test images, FLIPPED of them wrong."""
    folder = tmp_path_factory.mktemp("audit-set")
    lines, wrong = ["path,label"], set()
    for index in range(IMAGES):
        name = f"img{index:03d}.png"
        (folder / name).write_bytes(_png(fashion_mnist.images[index]))
        label = int(fashion_mnist.labels[index])
        if index % (IMAGES // FLIPPED) == 0:
            label = OTHER_KIND[label]
            wrong.add(str(folder / name))
        lines.append(f"{name},{LABELS[label]}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, wrong


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hetclient.cli", "audit", *args, "--no-progress"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )


def test_audit_of_a_manifest_flags_the_wrong_labels(gateway_url, labelled_set, tmp_path):
    manifest, wrong = labelled_set
    output = tmp_path / "audit.csv"
    done = _audit(str(manifest), "--model", "fashion_het", "--output", str(output),
                  "--url", gateway_url, "--batch-size", "16", "--concurrency", "3")
    assert done.returncode == 0, done.stderr
    rows = read_audit_csv(output)
    assert len(rows) == IMAGES and rows[0].latent_probs is not None
    flagged = {row.path for row in rows if row.flagged}
    assert wrong <= flagged, f"missed {sorted(wrong - flagged)}"
    assert len(flagged) <= 2 * len(wrong)
    for row in rows:
        assert sum(row.probs) == pytest.approx(1.0, abs=1e-4)
        assert sum(row.latent_probs) == pytest.approx(1.0, abs=1e-4)
        if row.path in wrong:
            assert row.kind in ("confusion", "outlier") and row.suggested_id != row.given_id
    summary = json.loads((tmp_path / "audit.summary.json").read_text())
    assert summary["source"] == "latent_probs" and summary["images"] == IMAGES
    assert 0.05 <= summary["estimated_wrong_share"] <= 0.25
    page = (tmp_path / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == IMAGES
    assert "estimated share of wrong labels" in done.stdout
    assert not (tmp_path / "audit.csv.partial.jsonl").exists()


def test_an_interrupted_audit_resumes_where_it_stopped(gateway_url, labelled_set, tmp_path):
    """Answers of an interrupted run (the partial file) are reused, not asked for again."""
    manifest, _ = labelled_set
    output = tmp_path / "audit.csv"
    first = _audit(str(manifest), "--output", str(output), "--url", gateway_url,
                   "--model", "fashion_het")
    assert first.returncode == 0, first.stderr
    reference = {row.path: row for row in read_audit_csv(output)}
    answered = list(reference.values())[: IMAGES // 2]
    partial = tmp_path / "audit.csv.partial.jsonl"
    records = [{"model": "fashion_het", "include": ["probs", "latent_probs"]}]
    records += [{"path": row.path, "probs": row.probs, "latent_probs": row.latent_probs}
                for row in answered]
    partial.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    output.unlink()
    second = _audit(str(manifest), "--output", str(output), "--url", gateway_url,
                    "--model", "fashion_het")
    assert second.returncode == 0, second.stderr
    assert f"{IMAGES // 2} answers reused" in second.stdout
    again = {row.path: row for row in read_audit_csv(output)}
    assert set(again) == set(reference)
    for path, row in reference.items():
        assert again[path].flagged == row.flagged
        assert again[path].score == pytest.approx(row.score, abs=1e-4)


def test_a_class_folder_audits_with_the_plain_model_on_its_probabilities(
    gateway_url, fashion_mnist, tmp_path
):
    folder = tmp_path / "set"
    for index in range(30):
        label = int(fashion_mnist.labels[index])
        (folder / str(label)).mkdir(parents=True, exist_ok=True)  # class ids as folder names
        (folder / str(label) / f"{index}.png").write_bytes(_png(fashion_mnist.images[index]))
    output = tmp_path / "det.csv"
    done = _audit(str(folder), "--model", "fashion_det", "--output", str(output),
                  "--url", gateway_url)
    assert done.returncode == 0, done.stderr
    rows = read_audit_csv(output)
    assert len(rows) == 30
    summary = json.loads((tmp_path / "det.summary.json").read_text())
    assert summary["model"] == "fashion_det"
    assert summary["source"] == "latent_probs"  # the re-exported plain model serves it too
    for row in rows:
        np.testing.assert_allclose(row.latent_probs, row.probs, atol=1e-5)


def test_predict_includes_full_and_noise_free_probabilities_only_when_asked(
    gateway_url, fashion_mnist
):
    image = base64.b64encode(_png(fashion_mnist.images[0])).decode()
    url = f"{gateway_url}/v1/models/fashion_het/predict"
    plain = httpx.post(url, json={"inputs": [{"image": image}]}, timeout=30).json()
    assert "probs" not in plain["results"][0] and "latent_probs" not in plain["results"][0]
    asked = httpx.post(url, json={"inputs": [{"image": image}] * 3,
                                  "include": ["probs", "latent_probs"]}, timeout=30).json()
    result = asked["results"][0]
    assert len(result["probs"]) == len(result["latent_probs"]) == 10
    assert sum(result["probs"]) == pytest.approx(1.0, abs=1e-4)
    top = result["predictions"][0]
    assert result["probs"][top["class_id"]] == pytest.approx(top["probability"], abs=1e-6)
    assert max(result["latent_probs"]) >= max(result["probs"])  # the noise spreads p_bar
    assert asked["results"][1] == result  # same bits in any batch position
    multipart = httpx.post(url, files=[("images", ("a.png", _png(fashion_mnist.images[0])))],
                           data={"include": "latent_probs"}, timeout=30).json()
    assert multipart["results"][0]["latent_probs"] == result["latent_probs"]
    assert "probs" not in multipart["results"][0]
    listing = httpx.get(f"{gateway_url}/v1/models", timeout=30).json()
    extras = {m["name"]: m["extra_outputs"] for m in listing["models"]}
    assert extras["fashion_het"] == ["probs", "latent_probs"]


def test_include_rejects_unknown_outputs(gateway_url, fashion_mnist):
    image = base64.b64encode(_png(fashion_mnist.images[0])).decode()
    answer = httpx.post(f"{gateway_url}/v1/predict",
                        json={"inputs": [{"image": image}], "include": ["logits"]}, timeout=30)
    assert answer.status_code == 422
