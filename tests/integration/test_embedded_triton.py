"""The embedded Triton serves the derived Python-backend models with ONNX Runtime: it exposes
each model card in the model config and answers exactly what ONNX Runtime answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hetcontract import HEAD_OUTPUTS, MODEL_CARD_PARAMETER, ModelCard

pytestmark = pytest.mark.integration

BATCH = 8
ATOL = 1e-6


@pytest.fixture(scope="module")
def triton_client(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def test_every_shipped_model_is_ready_in_triton(triton_client, model_cards):
    assert triton_client.is_server_ready()
    for name in model_cards:
        assert triton_client.is_model_ready(name)


def test_triton_exposes_each_model_card_as_a_config_parameter(triton_client, model_cards):
    for name, card in model_cards.items():
        config = triton_client.get_model_config(name, as_json=True)["config"]
        text = config["parameters"][MODEL_CARD_PARAMETER]["string_value"]
        assert ModelCard.model_validate(json.loads(text)) == card
        assert config["backend"] == "python"


def test_triton_answers_equal_onnx_runtime_for_every_output(
    triton_client, model_cards, fashion_mnist, onnx_reference
):
    for name in model_cards:
        batch = onnx_reference.tensor(name, fashion_mnist.images[:BATCH])
        infer_input = grpcclient.InferInput("images", list(batch.shape), "FP32")
        infer_input.set_data_from_numpy(batch)
        result = triton_client.infer(name, [infer_input], outputs=[
            grpcclient.InferRequestedOutput(spec.name.value) for spec in HEAD_OUTPUTS])
        reference = onnx_reference.run(name, batch)
        for spec in HEAD_OUTPUTS:
            served = result.as_numpy(spec.name.value)
            assert served.dtype == np.dtype(spec.numpy_dtype)
            np.testing.assert_allclose(
                served.reshape(BATCH, -1), reference[spec.name.value].reshape(BATCH, -1),
                atol=ATOL, err_msg=f"{name}.{spec.name.value}")
