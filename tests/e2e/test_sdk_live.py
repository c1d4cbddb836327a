"""The Python SDK against the live gateway (embedded Triton): real Fashion-MNIST images in,
the same answers from the sync and async clients, labels and classes as ONNX Runtime gives
them, and the gateway's errors as the SDK's typed exceptions."""

from __future__ import annotations

import asyncio
import io

import hetclient
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

NUM_IMAGES = 16
TOP_K = 3
ATOL = 1e-5
ACCURACY_IMAGES = 256
MAX_BATCH = 64
ACCURACY_TOLERANCE = 0.1
"""About three binomial standard deviations of an accuracy measured on 256 images."""
CARD_TEST_ACCURACY = "test_top1"


@pytest.fixture(scope="module")
def images(fashion_mnist) -> np.ndarray:
    """The first NUM_IMAGES test images, uint8 [N, 28, 28]."""
    return fashion_mnist.images[:NUM_IMAGES]


@pytest.fixture(scope="module")
def client(gateway_url):
    with hetclient.Client(gateway_url, timeout_s=60) as client:
        yield client


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _numbers(answer: hetclient.PredictResponse) -> list[str]:
    """Everything in an answer but its request id."""
    return [answer.model.model_dump_json()] + [r.model_dump_json() for r in answer.results]


async def _predict_async(url: str, images: list, *, model: str) -> hetclient.PredictResponse:
    async with hetclient.AsyncClient(url, timeout_s=60) as client:
        return await client.predict(images, model=model, top_k=TOP_K)


def test_health_and_ready_are_true(client):
    assert client.health() is True
    assert client.ready() is True


def test_models_lists_every_served_model_with_its_card(client, model_cards):
    listing = client.models()
    assert {m.name for m in listing.models} == set(model_cards)
    assert all(m.ready for m in listing.models)
    for name, card in model_cards.items():
        detail = client.model(name)
        assert detail.labels == card.labels
        assert detail.model_card["num_classes"] == card.num_classes


def test_sync_and_async_predictions_agree_and_match_onnx_runtime(
    client, gateway_url, images, model_cards, onnx_reference
):
    pngs = [_png(image) for image in images]
    for name, card in model_cards.items():
        sync_answer = client.predict(pngs, model=name, top_k=TOP_K)
        async_answer = asyncio.run(_predict_async(gateway_url, pngs, model=name))
        assert _numbers(sync_answer) == _numbers(async_answer)
        assert sync_answer.request_id != async_answer.request_id

        reference = onnx_reference.run(name, onnx_reference.tensor(name, images))
        assert sync_answer.model.name == name
        assert len(sync_answer.results) == NUM_IMAGES
        for b, result in enumerate(sync_answer.results):
            ids = reference["topk_ids"][b, :TOP_K].tolist()
            assert [p.class_id for p in result.predictions] == ids
            assert [p.label for p in result.predictions] == [card.labels[i] for i in ids]
            np.testing.assert_allclose(
                [p.probability for p in result.predictions],
                reference["topk_probs"][b, :TOP_K],
                atol=ATOL,
            )
            assert result.uncertainty.predictive_entropy == pytest.approx(
                float(reference["predictive_entropy"][b]), abs=ATOL
            )


def test_top1_labels_are_as_accurate_as_the_model_card_reports(client, fashion_mnist, model_cards):
    """The labels the SDK hands back are the right ones: on the first 256 test images their
    accuracy against Fashion-MNIST's own labels is the test accuracy the exporter measured."""
    images = fashion_mnist.images[:ACCURACY_IMAGES]
    truth = [int(label) for label in fashion_mnist.labels[:ACCURACY_IMAGES]]
    checked = 0
    for name, card in model_cards.items():
        reported = card.metrics.get(CARD_TEST_ACCURACY)
        if reported is None:
            continue
        predicted = []
        for start in range(0, ACCURACY_IMAGES, MAX_BATCH):
            answer = client.predict(list(images[start : start + MAX_BATCH]), model=name, top_k=1)
            predicted += [r.predictions[0].label for r in answer.results]
        accuracy = np.mean([p == card.labels[t] for p, t in zip(predicted, truth, strict=True)])
        assert accuracy >= reported - ACCURACY_TOLERANCE, (name, accuracy, reported)
        checked += 1
    if not checked:
        pytest.skip(f"no model card reports {CARD_TEST_ACCURACY!r}")


def test_paths_bytes_pil_images_and_uint8_arrays_give_the_same_answer(
    client, images, tmp_path, model_cards
):
    model = sorted(model_cards)[0]
    paths = []
    for index, image in enumerate(images[:4]):
        path = tmp_path / f"image{index}.png"
        path.write_bytes(_png(image))
        paths.append(path)
    forms = {
        "paths": [str(p) for p in paths],
        "bytes": [p.read_bytes() for p in paths],
        "pil": [Image.fromarray(image) for image in images[:4]],
        "arrays": list(images[:4]),
    }
    answers = {k: _numbers(client.predict(v, model=model, top_k=TOP_K)) for k, v in forms.items()}
    assert answers["bytes"] == answers["paths"] == answers["pil"] == answers["arrays"]


def test_float_tensors_give_the_answer_of_the_same_image(
    client, images, model_cards, onnx_reference
):
    model = sorted(model_cards)[0]
    tensors = onnx_reference.tensor(model, images[:4])  # float32 [N, C, H, W], normalised
    from_tensors = client.predict(list(tensors), model=model, top_k=TOP_K)
    from_images = client.predict(list(images[:4]), model=model, top_k=TOP_K)
    for by_tensor, by_image in zip(from_tensors.results, from_images.results, strict=True):
        assert [p.class_id for p in by_tensor.predictions] == [
            p.class_id for p in by_image.predictions
        ]
        np.testing.assert_allclose(
            [p.probability for p in by_tensor.predictions],
            [p.probability for p in by_image.predictions],
            atol=ATOL,
        )


def test_the_default_model_answers_when_no_model_is_named(client, images):
    listing = client.models()
    answer = client.predict(images[0])
    assert answer.model.name == listing.default_model
    assert len(answer.results) == 1


def test_an_unknown_model_raises_not_found_with_the_gateways_details(client, images):
    with pytest.raises(hetclient.NotFoundError) as info:
        client.predict(images[0], model="no_such_model")
    error = info.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert "no_such_model" in error.message
    assert error.request_id


def test_bytes_that_are_not_an_image_raise_unsupported_media_type(client, model_cards):
    with pytest.raises(hetclient.UnsupportedMediaTypeError) as info:
        client.predict(b"this is not an image", model=sorted(model_cards)[0])
    assert info.value.status_code == 415 and info.value.code


def test_top_k_beyond_the_models_classes_raises_unprocessable_entity(client, images, model_cards):
    name, card = sorted(model_cards.items())[0]
    with pytest.raises(hetclient.UnprocessableEntityError) as info:
        client.predict(images[0], model=name, top_k=card.num_classes + 1)
    assert info.value.status_code == 422


def test_a_tensor_of_the_wrong_shape_raises_unprocessable_entity(client, model_cards):
    with pytest.raises(hetclient.UnprocessableEntityError):
        client.predict(np.zeros((3, 5, 5), dtype=np.float32), model=sorted(model_cards)[0])


def test_the_async_client_raises_the_same_typed_errors(gateway_url, images):
    async def ask() -> None:
        async with hetclient.AsyncClient(gateway_url) as client:
            await client.predict(images[0], model="no_such_model")

    with pytest.raises(hetclient.NotFoundError):
        asyncio.run(ask())


def test_without_triton_the_sdk_retries_then_raises_service_unavailable(
    launch_gateway, images, unused_port
):
    """A gateway whose Triton is not there answers 503 with Retry-After; the SDK waits it out
    ``max_retries`` times, then raises, and ``ready()`` says False at once."""
    dead_triton = f"127.0.0.1:{unused_port()}"
    url = launch_gateway(dead_triton, retry_after_s=0)
    with hetclient.Client(url, timeout_s=30, max_retries=1) as client:
        assert client.health() is True
        assert client.ready() is False
        with pytest.raises(hetclient.ServiceUnavailableError) as info:
            client.predict(images[0], model="fashion_het")
    assert info.value.code == "backend_unavailable"
    assert info.value.status_code == 503
