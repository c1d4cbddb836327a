"""What a containerised gateway must answer: the same predictions as `make serve` (the embedded
Triton on the same model repository), compared field by field.

Typical usage::

    assert_same_answers(container_url, make_serve_url, fashion_mnist.images[:8], "fashion_het")
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from PIL import Image

ATOL = 1e-5
"""Both sides run the same ONNX graph with ONNX Runtime on the CPU; the installed ONNX Runtime
versions may differ (each resolves `onnxruntime>=1.18` from PyPI), hence float tolerance."""
TOP_K = 3


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_same_answers(served_url: str, reference_url: str, images: Sequence[np.ndarray],
                        model: str) -> None:
    """POST the images to both gateways' predict route; the answers agree (classes, labels and
    confusable classes exactly, probabilities and uncertainties within ``ATOL``)."""
    body = {"inputs": [{"image": png_base64(image)} for image in images], "top_k": TOP_K}
    answers = []
    for url in (served_url, reference_url):
        answer = httpx.post(f"{url}/v1/models/{model}/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    served, reference = answers
    assert served["model"] == reference["model"]
    assert len(served["results"]) == len(images)
    for ours, theirs in zip(served["results"], reference["results"], strict=True):
        assert [p["class_id"] for p in ours["predictions"]] == \
            [p["class_id"] for p in theirs["predictions"]]
        assert [p["label"] for p in ours["predictions"]] == \
            [p["label"] for p in theirs["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in ours["predictions"]],
                                   [p["probability"] for p in theirs["predictions"]], atol=ATOL)
        for key in ("predictive_entropy", "expected_entropy", "mutual_information"):
            assert ours["uncertainty"][key] == pytest.approx(theirs["uncertainty"][key], abs=ATOL)
        np.testing.assert_allclose(ours["uncertainty"]["latent_correlation"]["matrix"],
                                   theirs["uncertainty"]["latent_correlation"]["matrix"], atol=ATOL)
        for mine, other in zip(ours["uncertainty"]["confusable"],
                               theirs["uncertainty"]["confusable"], strict=True):
            assert [c["class_id"] for c in mine["confused_with"]] == \
                [c["class_id"] for c in other["confused_with"]]
