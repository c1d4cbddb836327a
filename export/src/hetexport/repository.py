"""Triton model configuration as small frozen dataclasses, one writer and one parser.

Typical usage::

    config = model_config("fashion_het", input_shape=(1, 28, 28), top_k=5, num_confusable=3,
                          num_classes=10, model_card_json=card.model_dump_json())
    text = render_config(config)              # config.pbtxt text
    assert parse_config(text) == config       # the round trip the tests hold
    gpu_text = render_config(config, gpu=True)    # KIND_GPU + TensorRT accelerator

The writer emits protobuf text format for Triton's ``ModelConfig`` (only the fields below);
the parser reads that subset back (a small hand parser: hetexport does not depend on
tritonclient, whose compiled ``model_config_pb2`` the tests use to check the text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from hetcontract import HEAD_OUTPUTS, INPUT_NAME, MODEL_CARD_PARAMETER, OPTIONAL_HEAD_OUTPUTS

CONFIG_FILENAME = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_PREFERRED_BATCH_SIZES = (8, 16, 32)
DEFAULT_MAX_QUEUE_DELAY_US = 2_000
DEFAULT_MAX_QUEUE_SIZE = 256
DEFAULT_QUEUE_TIMEOUT_US = 5_000_000
DEFAULT_TRT_WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class TensorConfig:
    """One input or output; ``dims`` exclude the batch axis; ``reshape`` maps [1] <-> []."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class QueuePolicy:
    """Bounded queue: reject beyond ``max_queue_size``; a request times out after ``timeout_us``.

    Not written by default (``DynamicBatching.queue_policy`` is None): Triton 2.51's dynamic
    batcher, given any ``default_queue_policy`` (a size bound alone or a timeout alone), now and
    then leaves queued requests waiting for its 500 ms idle wake-up. Measured with 16 concurrent
    clients on the demo model (``bench/queue_policy_stall.py``): p99 ~510 ms and 2-5x lower
    throughput with a policy, p99 ~15 ms without. The gateway's admission gate bounds the work
    in flight instead (Triton listens on loopback or an internal network only). Set one where
    other clients reach Triton directly and the stalls are the lesser evil.
    """

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    timeout_us: int = DEFAULT_QUEUE_TIMEOUT_US
    timeout_action: str = "REJECT"
    allow_timeout_override: bool = True


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    queue_policy: QueuePolicy | None = None
    """None: no ``default_queue_policy`` (see ``QueuePolicy`` for why that is the default)."""


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_CPU"


@dataclass(frozen=True)
class Warmup:
    """One warmup request: ``batch_size`` images of ``dims``, zeros or random data."""

    name: str
    batch_size: int
    dims: tuple[int, ...]
    random_data: bool = False
    input_name: str = INPUT_NAME
    data_type: str = "TYPE_FP32"


@dataclass(frozen=True)
class GpuAccelerator:
    """A ``gpu_execution_accelerator`` entry (e.g. ``tensorrt`` with precision and workspace)."""

    name: str = "tensorrt"
    parameters: tuple[tuple[str, str], ...] = (
        ("precision_mode", "FP32"),
        ("max_workspace_size_bytes", str(DEFAULT_TRT_WORKSPACE_BYTES)),
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    platform: str = PLATFORM
    backend: str = BACKEND
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    instance_groups: tuple[InstanceGroup, ...] = (InstanceGroup(),)
    warmup: tuple[Warmup, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    gpu_accelerators: tuple[GpuAccelerator, ...] = ()

    def parameter(self, key: str) -> str | None:
        return dict(self.parameters).get(key)

    def model_card(self) -> dict[str, Any] | None:
        """The model card JSON parameter, parsed (None when absent)."""
        text = self.parameter(MODEL_CARD_PARAMETER)
        return None if text is None else json.loads(text)


def head_output_configs(
    *, num_classes: int, top_k: int, num_confusable: int, optional: bool = False
) -> tuple[TensorConfig, ...]:
    """``hetcontract.HEAD_OUTPUTS`` as Triton outputs, and ``OPTIONAL_HEAD_OUTPUTS`` after
    them when ``optional`` (the exported ONNX graph has them; the GPU ensemble's Python head
    does not).

    Per-example scalars ([B] in the graph) are ``dims: [1]`` with ``reshape { shape: [] }``.
    """
    sizes = {"k_max": top_k, "m": num_confusable, "K": num_classes}
    configs = []
    for spec in (*HEAD_OUTPUTS, *(OPTIONAL_HEAD_OUTPUTS if optional else ())):
        dims = tuple(sizes[s] for s in spec.shape[1:])
        if dims:
            configs.append(TensorConfig(spec.name.value, spec.triton_dtype, dims))
        else:
            configs.append(TensorConfig(spec.name.value, spec.triton_dtype, (1,), reshape=()))
    return tuple(configs)


def model_config(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    top_k: int,
    num_confusable: int,
    model_card_json: str,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dynamic_batching: DynamicBatching | None = None,
    instance_count: int = 1,
) -> ModelConfig:
    """The CPU config of an exported HET model, with zero and random warmup requests."""
    if dynamic_batching is None:
        preferred = tuple(s for s in DEFAULT_PREFERRED_BATCH_SIZES if s <= max_batch_size)
        dynamic_batching = DynamicBatching(preferred_batch_sizes=preferred or (max_batch_size,))
    return ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        inputs=(TensorConfig(INPUT_NAME, "TYPE_FP32", tuple(input_shape)),),
        outputs=head_output_configs(
            num_classes=num_classes, top_k=top_k, num_confusable=num_confusable, optional=True
        ),
        dynamic_batching=dynamic_batching,
        instance_groups=(InstanceGroup(count=instance_count),),
        warmup=(
            Warmup("zeros", 1, tuple(input_shape)),
            Warmup("random", min(8, max_batch_size), tuple(input_shape), random_data=True),
        ),
        parameters=((MODEL_CARD_PARAMETER, model_card_json),),
    )


def gpu_variant(config: ModelConfig, *, accelerator: GpuAccelerator | None = None) -> ModelConfig:
    """The same model on KIND_GPU with a TensorRT (default) execution accelerator."""
    groups = tuple(replace(g, kind="KIND_GPU") for g in config.instance_groups)
    return replace(
        config, instance_groups=groups, gpu_accelerators=(accelerator or GpuAccelerator(),)
    )


# ---- writer ---------------------------------------------------------------------------------


def render_config(config: ModelConfig, *, gpu: bool = False) -> str:
    """config.pbtxt text (protobuf text format); ``gpu=True`` renders ``gpu_variant(config)``."""
    if gpu and not config.gpu_accelerators:
        config = gpu_variant(config)
    lines = [
        f"name: {quoted(config.name)}",
        f"platform: {quoted(config.platform)}",
        f"backend: {quoted(config.backend)}",
        f"max_batch_size: {config.max_batch_size}",
    ]
    lines += _block("input", [_tensor_lines(t) for t in config.inputs])
    lines += _block("output", [_tensor_lines(t) for t in config.outputs])
    lines += _message("dynamic_batching", _batching_lines(config.dynamic_batching))
    for group in config.instance_groups:
        lines += _message("instance_group", [f"count: {group.count}", f"kind: {group.kind}"])
    for warm in config.warmup:
        lines += _message("model_warmup", _warmup_lines(warm))
    for key, value in config.parameters:
        lines += _message(
            "parameters",
            [f"key: {quoted(key)}", *_message("value", [f"string_value: {quoted(value)}"])],
        )
    if config.gpu_accelerators:
        accelerators = [_accelerator_lines(a) for a in config.gpu_accelerators]
        inner = _message(
            "execution_accelerators", _block("gpu_execution_accelerator", accelerators)
        )
        lines += _message("optimization", inner)
    return "\n".join(lines) + "\n"


def quoted(text: str) -> str:
    """``text`` as a protobuf text-format string literal (quotes, backslashes, newlines escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dims(values: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]


def _message(name: str, body: list[str]) -> list[str]:
    return [f"{name} {{", *_indent(body), "}"]


def _block(name: str, items: list[list[str]]) -> list[str]:
    """``name [ {..}, {..} ]``."""
    lines = [f"{name} ["]
    for i, item in enumerate(items):
        close = "}," if i < len(items) - 1 else "}"
        lines += _indent(["{", *_indent(item), close])
    return [*lines, "]"]


def _tensor_lines(tensor: TensorConfig) -> list[str]:
    lines = [
        f"name: {quoted(tensor.name)}",
        f"data_type: {tensor.data_type}",
        f"dims: {_dims(tensor.dims)}",
    ]
    if tensor.reshape is not None:
        lines += _message("reshape", [f"shape: {_dims(tensor.reshape)}"])
    return lines


def _batching_lines(batching: DynamicBatching) -> list[str]:
    lines = [
        f"preferred_batch_size: {_dims(batching.preferred_batch_sizes)}",
        f"max_queue_delay_microseconds: {batching.max_queue_delay_us}",
    ]
    policy = batching.queue_policy
    if policy is None:
        return lines
    return [
        *lines,
        *_message(
            "default_queue_policy",
            [
                f"timeout_action: {policy.timeout_action}",
                f"default_timeout_microseconds: {policy.timeout_us}",
                f"allow_timeout_override: {str(policy.allow_timeout_override).lower()}",
                f"max_queue_size: {policy.max_queue_size}",
            ],
        ),
    ]


def _warmup_lines(warm: Warmup) -> list[str]:
    data = "random_data: true" if warm.random_data else "zero_data: true"
    value = [f"data_type: {warm.data_type}", f"dims: {_dims(warm.dims)}", data]
    return [
        f"name: {quoted(warm.name)}",
        f"batch_size: {warm.batch_size}",
        *_message("inputs", [f"key: {quoted(warm.input_name)}", *_message("value", value)]),
    ]


def _accelerator_lines(accelerator: GpuAccelerator) -> list[str]:
    lines = [f"name: {quoted(accelerator.name)}"]
    for key, value in accelerator.parameters:
        lines += _message("parameters", [f"key: {quoted(key)}", f"value: {quoted(value)}"])
    return lines


# ---- parser ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_.]*|-?\d+(?:\.\d+)?)|([{}\[\]:,]))'
)
Tree = dict[str, list[Any]]


class ConfigParseError(ValueError):
    """config.pbtxt text this parser does not understand."""


def config_with_card(text: str, card_json: str) -> str:
    """config.pbtxt ``text`` with its model card parameter replaced by ``card_json`` (added
    when absent), everything else as it was; ConfigParseError on text it cannot read."""
    config = parse_config(text)
    parameters = tuple((key, card_json if key == MODEL_CARD_PARAMETER else value)
                       for key, value in config.parameters)
    if config.parameter(MODEL_CARD_PARAMETER) is None:
        parameters += ((MODEL_CARD_PARAMETER, card_json),)
    return render_config(replace(config, parameters=parameters))


def parse_config(text: str) -> ModelConfig:
    """Read config.pbtxt text written by ``render_config`` (the subset of fields above).

    Raises ConfigParseError on text it cannot read.
    """
    tree = _parse_message(_tokens(text), top=True)
    try:
        return _config_from_tree(tree)
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ConfigParseError):
            raise
        raise ConfigParseError(f"unexpected config.pbtxt structure: {exc}") from exc


def _config_from_tree(tree: Tree) -> ModelConfig:
    return ModelConfig(
        name=_one(tree, "name"),
        platform=_one(tree, "platform", PLATFORM),
        backend=_one(tree, "backend", BACKEND),
        max_batch_size=int(_one(tree, "max_batch_size", 0)),
        inputs=tuple(_tensor(t) for t in tree.get("input", [])),
        outputs=tuple(_tensor(t) for t in tree.get("output", [])),
        dynamic_batching=_batching(_one(tree, "dynamic_batching", {})),
        instance_groups=tuple(
            InstanceGroup(count=int(_one(g, "count", 1)), kind=_one(g, "kind", "KIND_CPU"))
            for g in tree.get("instance_group", [])
        ),
        warmup=tuple(_warmup(w) for w in tree.get("model_warmup", [])),
        parameters=tuple(
            (_one(p, "key"), _one(_one(p, "value"), "string_value"))
            for p in tree.get("parameters", [])
        ),
        gpu_accelerators=_accelerators(tree),
    )


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ConfigParseError(f"unexpected text at offset {pos}: {text[pos : pos + 20]!r}")
        pos = match.end()
        if match.group(1) is None:
            tokens.append(next(g for g in match.groups()[1:] if g is not None))
    return tokens


def _parse_message(tokens: list[str], *, top: bool = False) -> Tree:
    tree: Tree = {}
    while tokens:
        if tokens[0] == "}":
            if top:
                raise ConfigParseError("unbalanced '}'")
            tokens.pop(0)
            return tree
        key = tokens.pop(0)
        if tokens and tokens[0] == ":":
            tokens.pop(0)
        tree.setdefault(key, []).extend(_parse_value(tokens))
    if not top:
        raise ConfigParseError("missing '}'")
    return tree


def _parse_value(tokens: list[str]) -> list[Any]:
    if not tokens:
        raise ConfigParseError("value expected at end of text")
    head = tokens.pop(0)
    if head == "{":
        return [_parse_message(tokens)]
    if head == "[":
        items: list[Any] = []
        while tokens and tokens[0] != "]":
            if tokens[0] == ",":
                tokens.pop(0)
                continue
            items.extend(_parse_value(tokens))
        if not tokens:
            raise ConfigParseError("missing ']'")
        tokens.pop(0)
        return items  # a list is the repeated field's values, as protobuf reads it
    if head in ("}", "]", ":", ","):
        raise ConfigParseError(f"value expected, got {head!r}")
    return [_scalar(head)]


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return re.sub(
            r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), token[1:-1]
        )
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in ("true", "false"):
        return token == "true"
    return token


def _one(tree: Tree, key: str, default: Any = ...) -> Any:
    values = tree.get(key)
    if not values:
        if default is ...:
            raise ConfigParseError(f"missing field {key!r}")
        return default
    return values[-1]


def _ints(tree: Tree, key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in tree.get(key, []))


def _tensor(tree: Tree) -> TensorConfig:
    reshape = _one(tree, "reshape", None)
    return TensorConfig(
        name=_one(tree, "name"),
        data_type=_one(tree, "data_type"),
        dims=_ints(tree, "dims"),
        reshape=None if reshape is None else _ints(reshape, "shape"),
    )


def _batching(tree: Tree) -> DynamicBatching:
    return DynamicBatching(
        preferred_batch_sizes=_ints(tree, "preferred_batch_size"),
        max_queue_delay_us=int(_one(tree, "max_queue_delay_microseconds", 0)),
        queue_policy=_queue_policy(_one(tree, "default_queue_policy", None)),
    )


def _queue_policy(tree: Tree | None) -> QueuePolicy | None:
    if tree is None:
        return None
    return QueuePolicy(
        max_queue_size=int(_one(tree, "max_queue_size", 0)),
        timeout_us=int(_one(tree, "default_timeout_microseconds", 0)),
        timeout_action=_one(tree, "timeout_action", "REJECT"),
        allow_timeout_override=bool(_one(tree, "allow_timeout_override", False)),
    )


def _warmup(tree: Tree) -> Warmup:
    entry = _one(tree, "inputs")
    value = _one(entry, "value")
    return Warmup(
        name=_one(tree, "name"),
        batch_size=int(_one(tree, "batch_size")),
        dims=_ints(value, "dims"),
        random_data=bool(_one(value, "random_data", False)),
        input_name=_one(entry, "key"),
        data_type=_one(value, "data_type"),
    )


def _accelerators(tree: Tree) -> tuple[GpuAccelerator, ...]:
    optimization = _one(tree, "optimization", {})
    accelerators = _one(optimization, "execution_accelerators", {})
    entries = accelerators.get("gpu_execution_accelerator", [])
    return tuple(
        GpuAccelerator(
            name=_one(e, "name"),
            parameters=tuple((_one(p, "key"), _one(p, "value")) for p in e.get("parameters", [])),
        )
        for e in entries
    )
