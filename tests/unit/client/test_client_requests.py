"""What the SDK sends: paths, JSON bodies and headers, for every kind of input."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import hetclient
import httpx
import numpy as np
import pytest
from PIL import Image


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_image_input(item: dict[str, Any]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["image"]))))


@pytest.fixture
def captured(run_client, make_answer):
    """``captured(action)``: run ``action(client)`` and return the requests the gateway got."""

    def capture(action, **client_kwargs) -> list[httpx.Request]:
        requests: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            body = json.loads(request.content) if request.content else {"inputs": [None]}
            return httpx.Response(200, json=make_answer(len(body["inputs"])).model_dump())

        run_client(handler, action, **client_kwargs)
        return requests

    return capture


def test_predict_without_model_posts_json_to_the_default_model_route(captured):
    (request,) = captured(lambda c: c.predict(b"\x89PNG-bytes", top_k=3))
    assert request.method == "POST"
    assert request.url == "http://gateway.test:8080/v1/predict"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "inputs": [{"image": base64.b64encode(b"\x89PNG-bytes").decode()}],
        "top_k": 3,
    }


def test_predict_with_model_posts_to_that_models_route_with_the_name_escaped(captured):
    (plain,) = captured(lambda c: c.predict(b"x", model="fashion_het"))
    (odd,) = captured(lambda c: c.predict(b"x", model="a/b c"))
    assert plain.url.path == "/v1/models/fashion_het/predict"
    assert odd.url.raw_path == b"/v1/models/a%2Fb%20c/predict"


def test_no_top_k_is_sent_unless_given_so_the_gateway_default_fits_the_model(captured):
    (default,) = captured(lambda c: c.predict(b"x"))
    (chosen,) = captured(lambda c: c.predict(b"x", top_k=2))
    assert "top_k" not in json.loads(default.content)
    assert json.loads(chosen.content)["top_k"] == 2
    assert hetclient.DEFAULT_TOP_K == 5  # the gateway's default, capped at the model's k_max


def test_a_coverage_and_a_risk_are_sent_only_when_asked_for(captured):
    (default,) = captured(lambda c: c.predict(b"x"))
    (chosen,) = captured(lambda c: c.predict(b"x", coverage=0.95, risk=0.02))
    assert not {"coverage", "risk"} & set(json.loads(default.content))
    body = json.loads(chosen.content)
    assert (body["coverage"], body["risk"]) == (0.95, 0.02)


def test_file_paths_as_str_and_path_are_sent_as_their_bytes(captured, tmp_path: Path):
    data = _png_bytes(np.arange(16, dtype=np.uint8).reshape(4, 4))
    file = tmp_path / "img.png"
    file.write_bytes(data)
    (request,) = captured(lambda c: c.predict([str(file), file]))
    images = [item["image"] for item in json.loads(request.content)["inputs"]]
    assert images == [base64.b64encode(data).decode()] * 2


def test_pil_images_are_sent_as_lossless_png(captured):
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    (request,) = captured(lambda c: c.predict(Image.fromarray(pixels)))
    (item,) = json.loads(request.content)["inputs"]
    assert base64.b64decode(item["image"]).startswith(b"\x89PNG")
    np.testing.assert_array_equal(_decode_image_input(item), pixels)


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (9, 6, 3), (9, 6, 4)])
def test_uint8_arrays_are_sent_as_png_images_with_the_same_pixels(captured, shape):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    (request,) = captured(lambda c: c.predict(pixels))
    (item,) = json.loads(request.content)["inputs"]
    expected = pixels[:, :, 0] if shape == (28, 28, 1) else pixels
    np.testing.assert_array_equal(_decode_image_input(item), expected)


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (3, 4, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_are_sent_as_tensor_inputs_unchanged(captured, shape, dtype):
    tensor = np.random.default_rng(2).normal(size=shape).astype(dtype)
    (request,) = captured(lambda c: c.predict(tensor))
    (item,) = json.loads(request.content)["inputs"]
    assert set(item) == {"tensor"}
    np.testing.assert_array_equal(np.asarray(item["tensor"], dtype=dtype), tensor)


def test_a_list_mixing_input_kinds_keeps_their_order(captured):
    grey = np.zeros((4, 4), dtype=np.uint8)
    tensor = np.ones((1, 4, 4), dtype=np.float32)
    (request,) = captured(lambda c: c.predict([b"raw", grey, tensor, Image.fromarray(grey)]))
    kinds = [next(iter(item)) for item in json.loads(request.content)["inputs"]]
    assert kinds == ["image", "image", "tensor", "image"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (42, "cannot send a int"),
        (np.zeros((4, 4), dtype=np.int32), "dtype int32"),
        (np.zeros((2, 4, 4, 1), dtype=np.uint8), "uint8 image must be"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "uint8 image must be"),
        (np.zeros((2, 1, 4, 4), dtype=np.float32), "float tensor must be"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "NaN or infinity"),
        (np.array([[0.0, np.inf]], dtype=np.float32), "NaN or infinity"),
        (b"", "empty"),
        ([], "no images"),
        ("/no/such/file.png", "cannot read image file"),
    ],
)
def test_inputs_the_sdk_cannot_send_raise_invalid_input_before_any_request(run_client, bad, reason):
    def never_called(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request should be sent")

    with pytest.raises(hetclient.InvalidInputError, match=reason) as info:
        run_client(never_called, lambda c: c.predict(bad))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("model", "top_k"), [(None, 0), ("", 5)])
def test_a_bad_top_k_or_empty_model_name_raises_invalid_input(run_client, model, top_k):
    with pytest.raises(hetclient.InvalidInputError):
        run_client(
            lambda r: httpx.Response(500), lambda c: c.predict(b"x", model=model, top_k=top_k)
        )


def test_every_request_carries_a_fresh_request_id_and_the_user_agent(captured):
    requests = captured(lambda c: c.predict(b"x")) + captured(lambda c: c.predict(b"x"))
    ids = [r.headers["x-request-id"] for r in requests]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    assert all(r.headers["user-agent"].startswith("hetclient/") for r in requests)


def test_api_key_is_sent_as_a_bearer_token_and_only_when_given(captured):
    (with_key,) = captured(lambda c: c.health(), api_key="s3cret")
    (without,) = captured(lambda c: c.health())
    assert with_key.headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in without.headers


def test_a_base_url_with_a_path_prefix_keeps_it():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"status": "ok"})

    with hetclient.Client(
        "http://gateway.test/hetserve/", transport=httpx.MockTransport(handler)
    ) as client:
        client.health()
    assert seen == ["/hetserve/healthz"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "gateway:8080"},
        {"base_url": "ftp://x"},
        {"base_url": "http://[::1"},
        {"timeout_s": 0},
        {"max_retries": -1},
    ],
)
def test_invalid_client_settings_are_refused(kwargs):
    settings = {"base_url": "http://127.0.0.1:8080", **kwargs}
    with pytest.raises(ValueError):
        hetclient.Client(settings.pop("base_url"), **settings)


def test_sync_and_async_clients_send_identical_requests(make_answer):
    import asyncio

    seen: dict[str, httpx.Request] = {}

    def recorder(kind: str):
        def handler(request: httpx.Request) -> httpx.Response:
            seen[kind] = request
            return httpx.Response(200, json=make_answer(2).model_dump())

        return handler

    inputs = [b"png", np.zeros((3, 3), dtype=np.uint8)]
    with hetclient.Client("http://g:1", transport=httpx.MockTransport(recorder("sync"))) as c:
        sync_answer = c.predict(inputs, model="m", top_k=2)

    async def run_async() -> hetclient.PredictResponse:
        transport = httpx.MockTransport(recorder("async"))
        async with hetclient.AsyncClient("http://g:1", transport=transport) as c:
            return await c.predict(inputs, model="m", top_k=2)

    async_answer = asyncio.run(run_async())
    assert sync_answer == async_answer
    sync_request, async_request = seen["sync"], seen["async"]
    assert (sync_request.method, sync_request.url, sync_request.content) == (
        async_request.method,
        async_request.url,
        async_request.content,
    )
    differing = {
        name
        for name in set(sync_request.headers) | set(async_request.headers)
        if sync_request.headers.get(name) != async_request.headers.get(name)
    }
    assert differing == {"x-request-id"}
