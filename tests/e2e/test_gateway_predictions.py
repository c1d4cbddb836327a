"""The gateway's answers for real Fashion-MNIST images equal ONNX Runtime's on the same
preprocessed tensors, whatever the input form, batch size or concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import math

import httpx
import numpy as np
import pytest
from hetcontract import MIN_CONFUSABLE_SHARE, WITHHELD_SHARE, PredictResponse
from PIL import Image

pytestmark = pytest.mark.e2e

ATOL = 1e-5
"""Served and reference numbers may differ by float32 rounding of a different batch shape."""
CONCURRENT_REQUESTS = 200
MAX_BATCH = 64


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def json_body(images: np.ndarray, *, top_k: int) -> dict:
    return {
        "inputs": [{"image": base64.b64encode(png(image)).decode()} for image in images],
        "top_k": top_k,
    }


def predict(url: str, model: str, body: dict) -> PredictResponse:
    answer = httpx.post(f"{url}/v1/models/{model}/predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return PredictResponse.model_validate_json(answer.content)


def numbers(answer: PredictResponse) -> list[tuple]:
    """Every number of an answer, for exact comparisons (request ids differ)."""
    return [result.model_dump_json() for result in answer.results]


def assert_matches_reference(answer: PredictResponse, reference: dict, card, top_k: int) -> None:
    for b, result in enumerate(answer.results):
        ids = reference["topk_ids"][b, :top_k]
        assert [p.class_id for p in result.predictions] == ids.tolist()
        assert [p.label for p in result.predictions] == [card.labels[i] for i in ids]
        np.testing.assert_allclose(
            [p.probability for p in result.predictions], reference["topk_probs"][b, :top_k],
            atol=ATOL,
        )
        np.testing.assert_allclose(
            [p.probability for p in result.predictions], reference["probs"][b, ids], atol=ATOL
        )
        u = result.uncertainty
        for name in ("predictive_entropy", "expected_entropy", "mutual_information"):
            np.testing.assert_allclose(
                getattr(u, name), float(np.ravel(reference[name][b])[0]), atol=ATOL
            )
        assert u.normalized_entropy == pytest.approx(
            u.predictive_entropy / math.log(card.num_classes), abs=1e-9
        )
        assert u.latent_correlation.class_ids == ids.tolist()
        np.testing.assert_allclose(
            u.latent_correlation.matrix, reference["topk_correlation"][b, :top_k, :top_k],
            atol=ATOL,
        )
        for j, confusable in enumerate(u.confusable):
            assert confusable.class_id == int(ids[j])
            assert confusable.withheld == bool(reference["confusable_share"][b, j, 0]
                                               == WITHHELD_SHARE)
            listed = reference["confusable_share"][b, j] >= MIN_CONFUSABLE_SHARE
            other_ids = reference["confusable_ids"][b, j][listed]
            assert [c.class_id for c in confusable.confused_with] == other_ids.tolist()
            assert [c.label for c in confusable.confused_with] == [card.labels[i]
                                                                    for i in other_ids]
            np.testing.assert_allclose(
                [c.share for c in confusable.confused_with],
                reference["confusable_share"][b, j][listed], atol=ATOL,
            )


@pytest.fixture(scope="module")
def models(gateway_url, model_cards) -> list[str]:
    return sorted(model_cards)


def test_answers_equal_onnx_runtime_on_the_same_tensors_for_every_model(
    gateway_url, models, fashion_mnist, onnx_reference
):
    images = fashion_mnist.images[:16]
    for model in models:
        card = onnx_reference.cards[model]
        answer = predict(gateway_url, model, json_body(images, top_k=card.top_k))
        assert answer.model.name == model
        assert answer.model.num_classes == card.num_classes
        assert answer.model.mc_samples == card.mc_samples
        reference = onnx_reference.run(model, onnx_reference.tensor(model, images))
        assert_matches_reference(answer, reference, card, top_k=card.top_k)


def test_top_k_keeps_the_first_k_classes_of_the_full_answer(gateway_url, models, fashion_mnist):
    model = models[0]
    images = fashion_mnist.images[:4]
    full = predict(gateway_url, model, json_body(images, top_k=3))
    short = predict(gateway_url, model, json_body(images, top_k=1))
    for long_result, short_result in zip(full.results, short.results, strict=True):
        assert short_result.predictions == long_result.predictions[:1]
        assert short_result.uncertainty.latent_correlation.matrix == [[
            long_result.uncertainty.latent_correlation.matrix[0][0]
        ]]
        assert len(short_result.uncertainty.confusable) == 1


def test_json_base64_and_multipart_files_give_the_same_numbers(gateway_url, models, fashion_mnist):
    model = models[0]
    images = fashion_mnist.images[20:23]
    from_json = predict(gateway_url, model, json_body(images, top_k=2))
    files = [("images", (f"item{i}.png", png(image), "image/png"))
             for i, image in enumerate(images)]
    answer = httpx.post(f"{gateway_url}/v1/models/{model}/predict", files=files,
                        data={"top_k": "2"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert numbers(PredictResponse.model_validate_json(answer.content)) == numbers(from_json)


def test_a_preprocessed_tensor_gives_the_same_numbers_as_its_image(
    gateway_url, models, fashion_mnist, onnx_reference
):
    model = models[0]
    image = fashion_mnist.images[30:31]
    tensor = onnx_reference.tensor(model, image)[0]
    from_image = predict(gateway_url, model, json_body(image, top_k=2))
    from_chw = predict(gateway_url, model, {"inputs": [{"tensor": tensor.tolist()}], "top_k": 2})
    from_hw = predict(gateway_url, model, {"inputs": [{"tensor": tensor[0].tolist()}], "top_k": 2})
    assert numbers(from_chw) == numbers(from_image)
    assert numbers(from_hw) == numbers(from_image)


def test_the_same_request_twice_gives_identical_numbers(gateway_url, models, fashion_mnist):
    body = json_body(fashion_mnist.images[40:48], top_k=3)
    for model in models:
        assert numbers(predict(gateway_url, model, body)) == numbers(
            predict(gateway_url, model, body)
        )


def test_default_model_answers_post_v1_predict(gateway_url, fashion_mnist):
    listing = httpx.get(f"{gateway_url}/v1/models", timeout=10).json()
    answer = httpx.post(f"{gateway_url}/v1/predict",
                        json=json_body(fashion_mnist.images[:1], top_k=1), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"]["name"] == listing["default_model"]


@pytest.mark.parametrize("batch", [1, MAX_BATCH])
def test_batches_of_1_and_64_images_match_onnx_runtime(
    gateway_url, models, fashion_mnist, onnx_reference, batch
):
    model = models[-1]
    card = onnx_reference.cards[model]
    images = fashion_mnist.images[100 : 100 + batch]
    answer = predict(gateway_url, model, json_body(images, top_k=card.top_k))
    assert len(answer.results) == batch
    reference = onnx_reference.run(model, onnx_reference.tensor(model, images))
    assert_matches_reference(answer, reference, card, top_k=card.top_k)


def test_labels_of_confident_answers_mostly_name_the_true_class(
    gateway_url, models, fashion_mnist, model_cards
):
    """Labels map right: trained models agree with the true label well above chance."""
    model = models[0]
    if not model_cards[model].metrics:
        pytest.skip(f"{model} carries no training metrics (untrained development model)")
    images, labels = fashion_mnist.images[:MAX_BATCH], fashion_mnist.labels[:MAX_BATCH]
    answer = predict(gateway_url, model, json_body(images, top_k=1))
    top1 = np.array([r.predictions[0].class_id for r in answer.results])
    assert (top1 == labels).mean() > 0.5


def test_200_concurrent_requests_are_all_answered_200(
    triton_server, launch_gateway, models, fashion_mnist
):
    """With admission control (issue 5) admitting them all, none fails or times out."""
    gateway_url = launch_gateway(triton_server.grpc_url, wait_for="/readyz",
                                 max_in_flight=CONCURRENT_REQUESTS)
    bodies = [json_body(fashion_mnist.images[i : i + 1], top_k=1)
              for i in range(CONCURRENT_REQUESTS)]

    async def send_all() -> list[int]:
        limits = httpx.Limits(max_connections=CONCURRENT_REQUESTS)
        async with httpx.AsyncClient(base_url=gateway_url, timeout=120, limits=limits) as client:
            answers = await asyncio.gather(
                *(client.post(f"/v1/models/{models[i % len(models)]}/predict", json=body)
                  for i, body in enumerate(bodies))
            )
        return [answer.status_code for answer in answers]

    statuses = asyncio.run(send_all())
    assert statuses == [200] * CONCURRENT_REQUESTS
