"""Images in any common format and mode become the model's normalised input tensor."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from hetcontract import InputSpec
from hetgateway.errors import InvalidImage, InvalidInput, PayloadTooLarge
from hetgateway.preprocessing import (
    decode_base64,
    image_tensor,
    open_image,
    tensor_from_nested,
)
from PIL import Image

GREY = InputSpec(shape=(1, 28, 28), mean=(0.5,), std=(0.25,))
RGB = InputSpec(shape=(3, 8, 8), mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5), channel_order="RGB")
MAX_PIXELS = 1_000_000
LOSSLESS = ("PNG", "GIF", "BMP", "WEBP")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def ramp(height: int = 28, width: int = 28) -> np.ndarray:
    """uint8 grey levels 0..255 with distinct values in every row and column."""
    return ((np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 256).astype(
        np.uint8
    )


def expected_grey(pixels: np.ndarray, spec: InputSpec = GREY) -> np.ndarray:
    return ((pixels.astype(np.float32) / 255.0 - spec.mean[0]) / spec.std[0])[None]


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_grey_images_normalise_exactly_per_the_card(fmt):
    pixels = ramp()
    options = {"lossless": True} if fmt == "WEBP" else {}
    tensor = image_tensor(encode(Image.fromarray(pixels), fmt, **options), GREY,
                          max_pixels=MAX_PIXELS)
    assert tensor.dtype == np.float32 and tensor.shape == (1, 28, 28)
    np.testing.assert_allclose(tensor, expected_grey(pixels), atol=1e-6)


def test_jpeg_decodes_close_to_its_source():
    pixels = np.full((28, 28), 200, np.uint8)
    tensor = image_tensor(encode(Image.fromarray(pixels), "JPEG", quality=95), GREY,
                          max_pixels=MAX_PIXELS)
    np.testing.assert_allclose(tensor, expected_grey(pixels), atol=3 / 255 / GREY.std[0])


def test_rgb_image_for_a_grey_model_uses_itu_r_601_luma():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 150, 200
    tensor = image_tensor(encode(Image.fromarray(rgb), "PNG"), GREY, max_pixels=MAX_PIXELS)
    luma = round(100 * 299 / 1000 + 150 * 587 / 1000 + 200 * 114 / 1000)
    np.testing.assert_allclose(tensor, expected_grey(np.full((28, 28), luma)), atol=1e-2)


def test_grey_image_for_an_rgb_model_repeats_the_channel_with_each_channels_mean_and_std():
    pixels = ramp(8, 8)
    tensor = image_tensor(encode(Image.fromarray(pixels), "PNG"), RGB, max_pixels=MAX_PIXELS)
    assert tensor.shape == (3, 8, 8)
    for c in range(3):
        np.testing.assert_allclose(
            tensor[c], (pixels / 255.0 - RGB.mean[c]) / RGB.std[c], atol=1e-6
        )


def test_rgba_transparency_is_composited_onto_black():
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:14, :, 3] = 255  # top half opaque white, bottom half fully transparent
    tensor = image_tensor(encode(Image.fromarray(rgba, "RGBA"), "PNG"), GREY,
                          max_pixels=MAX_PIXELS)
    expected = np.zeros((28, 28))
    expected[:14] = 255
    np.testing.assert_allclose(tensor, expected_grey(expected), atol=1e-6)


def test_palette_and_bilevel_images_are_converted():
    pixels = (ramp() > 127).astype(np.uint8) * 255
    bilevel = Image.fromarray(pixels).convert("1")
    palette = Image.fromarray(pixels).convert("P")
    for image in (bilevel, palette):
        tensor = image_tensor(encode(image, "PNG"), GREY, max_pixels=MAX_PIXELS)
        np.testing.assert_allclose(tensor, expected_grey(pixels), atol=1e-6)


def test_sixteen_bit_grey_is_scaled_to_the_eight_bit_range():
    levels = (ramp().astype(np.uint16) * 257)  # 8-bit level v as 16-bit v * 257
    image = Image.fromarray(levels)  # uint16 -> mode "I;16"
    data = encode(image, "PNG")
    assert open_image(data, max_pixels=MAX_PIXELS).mode.startswith("I")
    tensor = image_tensor(data, GREY, max_pixels=MAX_PIXELS)
    np.testing.assert_allclose(tensor, expected_grey(ramp()), atol=1e-5)


def test_other_sizes_are_resized_to_the_cards_size():
    pixels = np.full((100, 60), 128, np.uint8)
    tensor = image_tensor(encode(Image.fromarray(pixels), "PNG"), GREY, max_pixels=MAX_PIXELS)
    assert tensor.shape == (1, 28, 28)
    np.testing.assert_allclose(tensor, expected_grey(np.full((28, 28), 128)), atol=1e-5)


def test_animated_gif_uses_its_first_frame():
    first, second = np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(first).save(buffer, format="GIF", save_all=True,
                                append_images=[Image.fromarray(second)])
    tensor = image_tensor(buffer.getvalue(), GREY, max_pixels=MAX_PIXELS)
    np.testing.assert_allclose(tensor, expected_grey(first), atol=1e-6)


@pytest.mark.parametrize(
    "data",
    [b"", b"plain text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
     encode(Image.new("L", (4, 4)), "TIFF")],
    ids=["empty", "text", "broken-png-header", "tiff-not-accepted"],
)
def test_bytes_that_are_no_accepted_image_are_refused(data):
    with pytest.raises(InvalidImage):
        image_tensor(data, GREY, max_pixels=MAX_PIXELS)


def test_truncated_png_is_refused():
    data = encode(Image.fromarray(ramp()), "PNG")
    with pytest.raises(InvalidImage, match="decoded"):
        image_tensor(data[: len(data) // 2], GREY, max_pixels=MAX_PIXELS)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    data = encode(Image.new("L", (2000, 1000)), "PNG")
    with pytest.raises(PayloadTooLarge, match="2000x1000"):
        open_image(data, max_pixels=1_999_999)
    assert open_image(data, max_pixels=2_000_000).size == (2000, 1000)


def test_the_pixel_limit_is_per_call_and_leaves_pillows_global_alone():
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLarge):
        open_image(encode(Image.new("L", (50, 50)), "PNG"), max_pixels=100)
    assert before == Image.MAX_IMAGE_PIXELS


def test_base64_and_data_urls_decode():
    assert decode_base64(base64.b64encode(b"abc").decode()) == b"abc"
    assert decode_base64("data:image/png;base64," + base64.b64encode(b"xyz").decode()) == b"xyz"
    with pytest.raises(InvalidImage, match="base64"):
        decode_base64("not*base64")


def test_tensors_of_the_cards_shape_pass_through_as_float32():
    values = np.linspace(-1, 1, 28 * 28).reshape(1, 28, 28)
    np.testing.assert_array_equal(tensor_from_nested(values.tolist(), GREY),
                                  values.astype(np.float32))
    np.testing.assert_array_equal(tensor_from_nested(values[0].tolist(), GREY),
                                  values.astype(np.float32))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((27, 28)).tolist(), "shape"),
        (np.zeros((2, 28, 28)).tolist(), "shape"),
        ([[0.0] * 28] * 27 + [[0.0]], "rectangular"),
        ([["a"] * 28] * 28, "rectangular"),
        ((np.zeros((28, 28)) + np.nan).tolist(), "NaN"),
        ([[float("inf")] * 28] * 28, "NaN or infinite"),
        ([[1e39] * 28] * 28, "beyond float32"),
    ],
    ids=["short", "channels", "ragged", "strings", "nan", "inf", "overflow"],
)
def test_malformed_tensors_are_refused(values, message):
    with pytest.raises(InvalidInput, match=message):
        tensor_from_nested(values, GREY)


def test_hw_tensors_are_refused_for_multichannel_models():
    with pytest.raises(InvalidInput, match="shape"):
        tensor_from_nested(np.zeros((8, 8)).tolist(), RGB)
