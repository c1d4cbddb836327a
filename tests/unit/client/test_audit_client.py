"""``hetclient audit`` without a gateway: reading manifests and folders, resolving labels,
resuming from the partial answers file, leaving out images the gateway refuses
(``httpx.MockTransport`` plays the gateway)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hetclient import audit as audit_module
from hetclient.audit import (
    AuditOptions,
    LabelledImage,
    audit,
    partial_path,
    read_labelled_images,
    resolve_labels,
)
from hetclient.errors import APIStatusError, InvalidInputError
from hetcontract.audit import read_audit_csv

LABELS = ["cat", "dog", "bird"]
REAL_CLIENT = audit_module.AsyncClient


def test_a_manifest_with_header_resolves_paths_beside_it(tmp_path):
    manifest = tmp_path / "sets" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label\na.png,cat\n/abs/b.png,2\n\n")
    images = read_labelled_images(manifest)
    assert images == [LabelledImage(str(tmp_path / "sets" / "a.png"), "cat"),
                      LabelledImage("/abs/b.png", "2")]


def test_a_manifest_without_header_and_a_bad_row(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("a.png,dog\n")
    assert read_labelled_images(manifest)[0].label == "dog"
    manifest.write_text("a.png\n")
    with pytest.raises(InvalidInputError, match="row 1"):
        read_labelled_images(manifest)


def test_a_folder_per_class_lists_images_sorted(tmp_path):
    for label, names in {"dog": ["b.png", "a.jpg", "notes.txt"], "cat": ["c.png"]}.items():
        (tmp_path / label).mkdir()
        for name in names:
            (tmp_path / label / name).write_bytes(b"x")
    images = read_labelled_images(tmp_path)
    assert [(img.path.split("/")[-1], img.label) for img in images] == [
        ("c.png", "cat"), ("a.jpg", "dog"), ("b.png", "dog")]


def test_nothing_to_audit_is_an_input_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no labelled images"):
        read_labelled_images(tmp_path)
    with pytest.raises(InvalidInputError, match="cannot read manifest"):
        read_labelled_images(tmp_path / "missing.csv")


def test_labels_are_class_names_or_ids():
    images = [LabelledImage("a", "dog"), LabelledImage("b", "2")]
    assert resolve_labels(images, LABELS) == [1, 2]
    with pytest.raises(InvalidInputError, match="'fish' is neither"):
        resolve_labels([LabelledImage("c", "fish")], LABELS)
    with pytest.raises(InvalidInputError, match="neither"):
        resolve_labels([LabelledImage("c", "3")], LABELS)


class FakeGateway:
    """Answers /v1/models/m and predict with fixed probabilities per image (the image bytes
    name the class); refuses the bytes b"bad" with 415 and counts predicted images."""

    def __init__(self, *, latent: bool = True, fail_after: int | None = None) -> None:
        self.latent, self.fail_after, self.predicted = latent, fail_after, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models/m":
            extras = ["probs", "latent_probs"] if self.latent else ["probs"]
            return httpx.Response(200, json={
                "name": "m", "version": "1", "ready": True, "head": "het", "num_classes": 3,
                "labels": LABELS, "extra_outputs": extras, "model_card": {}})
        body = json.loads(request.content)
        images = [base64_decode(item["image"]) for item in body["inputs"]]
        if b"bad" in images:
            return httpx.Response(415, json={"error": {"code": "invalid_image",
                                                       "message": "not an image"}})
        if self.fail_after is not None and self.predicted >= self.fail_after:
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "x"}})
        self.predicted += len(images)
        return httpx.Response(200, json={
            "model": {"name": "m", "version": "1", "num_classes": 3, "mc_samples": 1,
                      "temperature": 1.0},
            "request_id": "r",
            "results": [_result(int(image), self.latent, body["include"]) for image in images],
        })


def base64_decode(text: str) -> bytes:
    import base64
    return base64.b64decode(text)


def _result(cls: int, latent: bool, include: list[str]) -> dict:
    probs = [0.05, 0.05, 0.05]
    probs[cls] = 0.9
    result = {"predictions": [{"class_id": cls, "label": LABELS[cls], "probability": 0.9}],
              "uncertainty": {"predictive_entropy": 0.4, "normalized_entropy": 0.4,
                              "expected_entropy": 0.4, "mutual_information": 0.0,
                              "latent_correlation": {"class_ids": [cls], "matrix": [[1.0]]},
                              "confusable": []},
              "probs": probs}
    if latent and "latent_probs" in include:
        result["latent_probs"] = probs
    return result


def labelled_files(tmp_path, count: int, *, wrong_every: int = 5) -> list[LabelledImage]:
    images = []
    for index in range(count):
        cls = index % 3
        path = tmp_path / f"{index}.png"
        path.write_bytes(str(cls).encode())
        given = (cls + 1) % 3 if index % wrong_every == 0 else cls
        images.append(LabelledImage(str(path), LABELS[given]))
    return images


def run(images, tmp_path, gateway, monkeypatch, **options):
    def client(*args, **kwargs):
        return REAL_CLIENT(*args, **kwargs, transport=httpx.MockTransport(gateway))

    monkeypatch.setattr(audit_module, "AsyncClient", client)
    settings = {"url": "http://gw", "model": "m", "output": tmp_path / "out.csv",
                "batch_size": 4, "concurrency": 3, "max_retries": 0, **options}
    return asyncio.run(audit(images, AuditOptions(**settings)))


def test_an_audit_flags_the_wrong_labels_and_writes_its_files(tmp_path, monkeypatch):
    images = labelled_files(tmp_path, 40)
    result = run(images, tmp_path, FakeGateway(), monkeypatch)
    rows = read_audit_csv(tmp_path / "out.csv")
    assert [row.path for row in rows] == [image.path for image in images]
    assert {row.path for row in rows if row.flagged} == {images[i].path for i in range(0, 40, 5)}
    assert result.summary.source == "latent_probs" and result.resumed == 0
    assert (tmp_path / "out.summary.json").is_file() and (tmp_path / "out.html").is_file()
    assert not partial_path(tmp_path / "out.csv").exists()


def test_a_model_without_latent_probs_is_audited_on_its_probabilities(tmp_path, monkeypatch):
    result = run(labelled_files(tmp_path, 12), tmp_path, FakeGateway(latent=False), monkeypatch)
    assert result.summary.source == "probs" and result.rows[0].latent_probs is None


def test_an_interrupted_audit_keeps_its_answers_and_the_next_run_sends_only_the_rest(
    tmp_path, monkeypatch
):
    images = labelled_files(tmp_path, 40)
    with pytest.raises(APIStatusError):
        run(images, tmp_path, FakeGateway(fail_after=16), monkeypatch, concurrency=1)
    partial = partial_path(tmp_path / "out.csv")
    assert len(partial.read_text().splitlines()) == 1 + 16
    gateway = FakeGateway()
    result = run(images, tmp_path, gateway, monkeypatch)
    assert gateway.predicted == 24 and result.resumed == 16
    assert len(read_audit_csv(tmp_path / "out.csv")) == 40


def test_restart_discards_the_partial_answers(tmp_path, monkeypatch):
    images = labelled_files(tmp_path, 8)
    partial = partial_path(tmp_path / "out.csv")
    partial.write_text(json.dumps({"model": "other", "include": ["probs"]}) + "\n")
    with pytest.raises(InvalidInputError, match="--restart"):
        run(images, tmp_path, FakeGateway(), monkeypatch)
    gateway = FakeGateway()
    run(images, tmp_path, gateway, monkeypatch, restart=True)
    assert gateway.predicted == 8


def test_images_the_gateway_refuses_are_left_out_and_reported(tmp_path, monkeypatch):
    images = labelled_files(tmp_path, 10)
    (tmp_path / "3.png").write_bytes(b"bad")
    result = run(images, tmp_path, FakeGateway(), monkeypatch)
    assert [path for path, _ in result.failed] == [str(tmp_path / "3.png")]
    assert len(result.rows) == 9
