"""config.pbtxt: one writer, one parser, and Triton's own protobuf reading the same text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from hetcontract import HEAD_OUTPUTS, MODEL_CARD_PARAMETER, OPTIONAL_HEAD_OUTPUTS
from hetexport.repo.config import (
    FP32,
    PYTHON_BACKEND,
    DynamicBatching,
    EnsembleStep,
    GpuAccelerator,
    QueuePolicy,
    TensorConfig,
    ensemble_config,
    gpu_variant,
    head_output_configs,
    images_input,
    onnx_model_config,
    placed_model_config,
    same_names,
)
from hetexport.repo.pbtxt import ConfigParseError, parse_config, render_config
from tritonclient.grpc import model_config_pb2

CARD = {"name": "m", "labels": ['say "hi"', "back\\slash", "new\nline", "Ünïcode"], "x": [1, 2.5]}


def config(**overrides):
    options = {
        "input_shape": (1, 28, 28),
        "num_classes": 10,
        "top_k": 5,
        "num_confusable": 3,
        **overrides,
    }
    return onnx_model_config("fashion_het", **options).with_parameter(
        MODEL_CARD_PARAMETER, json.dumps(CARD))


LATENT = (TensorConfig("latent_mean", FP32, (10,)), TensorConfig("latent_factors", FP32, (10, 6)))


def python_head_config():
    return placed_model_config(
        "het_mc_head", inputs=LATENT, max_batch_size=64, max_queue_delay_us=500,
        outputs=head_output_configs(num_classes=10, top_k=5, num_confusable=3),
        backend=PYTHON_BACKEND,
        parameters={"FORCE_CPU_ONLY_INPUT_TENSORS": "no", "mc_impl": "auto"})


def ensemble():
    names = [spec.name.value for spec in HEAD_OUTPUTS]
    steps = (EnsembleStep("backbone", same_names(["images"]), same_names(["latent_mean"])),
             EnsembleStep("het_mc_head", same_names(["latent_mean"]), same_names(names)))
    return ensemble_config(
        "fashion_het_gpu", inputs=[images_input((1, 28, 28))], steps=steps, max_batch_size=64,
        outputs=head_output_configs(num_classes=10, top_k=5, num_confusable=3,
                                    reshape_scalars=False),
    ).with_parameter(MODEL_CARD_PARAMETER, json.dumps(CARD))


def as_protobuf(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("gpu", [False, True])
def test_render_then_parse_round_trips(gpu):
    original = gpu_variant(config()) if gpu else config()
    assert parse_config(render_config(original)) == original
    assert parse_config(render_config(config(), gpu=gpu)) == original


@pytest.mark.parametrize("kind", [python_head_config, ensemble])
def test_python_backend_and_ensemble_configs_round_trip(kind):
    original = kind()
    assert parse_config(render_config(original)) == original


def test_tritons_protobuf_reads_a_python_backend_model_placed_by_triton():
    pb = as_protobuf(render_config(python_head_config()))
    assert pb.backend == "python" and pb.platform == ""
    assert pb.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    assert pb.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(pb.dynamic_batching.preferred_batch_size) == []
    assert pb.parameters["mc_impl"].string_value == "auto"


def test_tritons_protobuf_reads_an_ensemble_with_its_steps():
    pb = as_protobuf(render_config(ensemble()))
    assert pb.platform == "ensemble" and pb.backend == ""
    assert not pb.HasField("dynamic_batching") and len(pb.instance_group) == 0
    first, second = pb.ensemble_scheduling.step
    assert (first.model_name, first.model_version) == ("backbone", -1)
    assert dict(first.input_map) == {"images": "images"}
    assert dict(second.output_map) == {spec.name.value: spec.name.value for spec in HEAD_OUTPUTS}
    scalars = [o for o in pb.output if list(o.dims) == [1]]
    assert scalars and not any(o.HasField("reshape") for o in scalars)
    assert json.loads(pb.parameters[MODEL_CARD_PARAMETER].string_value) == CARD


def test_a_parameter_is_replaced_in_place_or_added_last():
    base = python_head_config()
    replaced = base.with_parameter("mc_impl", "triton")
    assert replaced.parameters == (("FORCE_CPU_ONLY_INPUT_TENSORS", "no"), ("mc_impl", "triton"))
    assert base.with_parameter("new", "x").parameters[-1] == ("new", "x")


def test_custom_batching_and_instances_round_trip():
    custom = config(
        max_batch_size=128,
        instance_count=3,
        dynamic_batching=DynamicBatching(
            (4, 64), 500, QueuePolicy(max_queue_size=10, timeout_us=1000)
        ),
    )
    assert parse_config(render_config(custom)) == custom


def test_an_explicit_queue_policy_reaches_triton_as_a_rejecting_bounded_queue():
    bounded = config(dynamic_batching=DynamicBatching(
        (8,), 100, QueuePolicy(max_queue_size=32, timeout_us=250_000)
    ))
    policy = as_protobuf(render_config(bounded)).dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (32, 250_000)
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert policy.allow_timeout_override


def test_tritons_protobuf_reads_what_we_write():
    pb = as_protobuf(render_config(config()))
    assert (
        pb.platform == "onnxruntime_onnx"
        and pb.backend == "onnxruntime"
        and pb.max_batch_size == 64
    )
    assert [o.name for o in pb.output] == [
        spec.name.value for spec in (*HEAD_OUTPUTS, *OPTIONAL_HEAD_OUTPUTS)
    ]
    assert pb.input[0].name == "images" and list(pb.input[0].dims) == [1, 28, 28]
    assert list(pb.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    # no queue policy by default: Triton 2.51 stalls queued requests 0.5 s with one (QueuePolicy)
    assert not pb.dynamic_batching.HasField("default_queue_policy")
    assert [w.name for w in pb.model_warmup] == ["zeros", "random"]
    assert (
        pb.model_warmup[0].inputs["images"].zero_data
        and pb.model_warmup[1].inputs["images"].random_data
    )
    assert pb.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert json.loads(pb.parameters[MODEL_CARD_PARAMETER].string_value) == CARD


def test_per_example_scalars_are_dims_1_reshaped_to_scalars():
    pb = as_protobuf(render_config(config()))
    by_name = {o.name: o for o in pb.output}
    for spec in HEAD_OUTPUTS:
        output = by_name[spec.name.value]
        if len(spec.shape) == 1:
            assert (
                list(output.dims) == [1]
                and output.HasField("reshape")
                and list(output.reshape.shape) == []
            )
        else:
            assert len(output.dims) == len(spec.shape) - 1


def test_gpu_variant_uses_gpu_instances_and_a_tensorrt_accelerator():
    pb = as_protobuf(render_config(config(), gpu=True))
    assert pb.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    accelerator = pb.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP32"
    cuda_only = gpu_variant(config(), accelerator=GpuAccelerator("cuda", ()))
    assert parse_config(render_config(cuda_only)).gpu_accelerators == (GpuAccelerator("cuda", ()),)


def test_model_card_parameter_survives_quotes_backslashes_newlines_and_unicode():
    assert parse_config(render_config(config())).model_card() == CARD


def test_preferred_batch_sizes_never_exceed_max_batch_size():
    assert parse_config(
        render_config(config(max_batch_size=4))
    ).dynamic_batching.preferred_batch_sizes == (4,)


@pytest.mark.parametrize("text", ['name: "x" input [ { name: "a" ', "name: }", 'name: "x" @'])
def test_malformed_text_is_a_parse_error(text):
    with pytest.raises(ConfigParseError):
        parse_config(text)


SHIPPED_CONFIGS = sorted(Path(__file__).resolve().parents[3].glob("model_repo*/*/config.pbtxt"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/"
                         f"{p.parent.name}")
def test_every_shipped_config_is_what_the_one_writer_renders(path: Path) -> None:
    """ONNX, Python-backend and ensemble configs alike: parsed and rendered again, the text is
    unchanged, and Triton's protobuf reads it."""
    text = path.read_text()
    assert render_config(parse_config(text)) == text
    assert as_protobuf(text).name == path.parent.name
