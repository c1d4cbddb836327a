"""config.pbtxt: the one writer and the one parser of Triton model configurations.

Typical usage::

    text = render_config(config)              # protobuf text format
    assert parse_config(text) == config       # the round trip the tests hold
    gpu_text = render_config(config, gpu=True)    # KIND_GPU + TensorRT accelerator

The writer emits protobuf text format for Triton's ``ModelConfig`` (only the fields of
``hetexport.repo.config``); the parser reads that subset back (a small hand parser: hetexport
does not depend on tritonclient, whose compiled ``model_config_pb2`` the tests use to check
the text).
"""

from __future__ import annotations

import re
from typing import Any

from hetexport.repo.config import (
    DynamicBatching,
    EnsembleStep,
    GpuAccelerator,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    TensorConfig,
    Warmup,
    gpu_variant,
)

# ---- writer ---------------------------------------------------------------------------------


def render_config(config: ModelConfig, *, gpu: bool = False) -> str:
    """config.pbtxt text (protobuf text format); ``gpu=True`` renders ``gpu_variant(config)``."""
    if gpu and not config.gpu_accelerators:
        config = gpu_variant(config)
    lines = [f"name: {quoted(config.name)}"]
    if config.platform is not None:
        lines.append(f"platform: {quoted(config.platform)}")
    if config.backend is not None:
        lines.append(f"backend: {quoted(config.backend)}")
    lines.append(f"max_batch_size: {config.max_batch_size}")
    lines += _block("input", [_tensor_lines(t) for t in config.inputs])
    lines += _block("output", [_tensor_lines(t) for t in config.outputs])
    if config.dynamic_batching is not None:
        lines += _message("dynamic_batching", _batching_lines(config.dynamic_batching))
    for group in config.instance_groups:
        kind = [] if group.kind is None else [f"kind: {group.kind}"]
        lines += _message("instance_group", [f"count: {group.count}", *kind])
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
    if config.ensemble_steps:
        steps = [_step_lines(step) for step in config.ensemble_steps]
        lines += _message("ensemble_scheduling", _block("step", steps))
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
    lines = []
    if batching.preferred_batch_sizes:
        lines.append(f"preferred_batch_size: {_dims(batching.preferred_batch_sizes)}")
    lines.append(f"max_queue_delay_microseconds: {batching.max_queue_delay_us}")
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


def _step_lines(step: EnsembleStep) -> list[str]:
    lines = [f"model_name: {quoted(step.model_name)}", f"model_version: {step.model_version}"]
    for field_name, mapping in (("input_map", step.input_map), ("output_map", step.output_map)):
        for key, value in mapping:
            lines += _message(field_name, [f"key: {quoted(key)}", f"value: {quoted(value)}"])
    return lines


# ---- parser ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_.]*|-?\d+(?:\.\d+)?)|([{}\[\]:,]))'
)
Tree = dict[str, list[Any]]


class ConfigParseError(ValueError):
    """config.pbtxt text this parser does not understand."""


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
    batching = _one(tree, "dynamic_batching", None)
    return ModelConfig(
        name=_one(tree, "name"),
        platform=_one(tree, "platform", None),
        backend=_one(tree, "backend", None),
        max_batch_size=int(_one(tree, "max_batch_size", 0)),
        inputs=tuple(_tensor(t) for t in tree.get("input", [])),
        outputs=tuple(_tensor(t) for t in tree.get("output", [])),
        dynamic_batching=None if batching is None else _batching(batching),
        instance_groups=tuple(
            InstanceGroup(count=int(_one(g, "count", 1)), kind=_one(g, "kind", None))
            for g in tree.get("instance_group", [])
        ),
        warmup=tuple(_warmup(w) for w in tree.get("model_warmup", [])),
        parameters=tuple(
            (_one(p, "key"), _one(_one(p, "value"), "string_value"))
            for p in tree.get("parameters", [])
        ),
        gpu_accelerators=_accelerators(tree),
        ensemble_steps=tuple(
            _step(s) for s in _one(tree, "ensemble_scheduling", {}).get("step", [])
        ),
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


def _pairs(entries: list[Tree]) -> tuple[tuple[str, str], ...]:
    return tuple((_one(e, "key"), _one(e, "value")) for e in entries)


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
        GpuAccelerator(name=_one(e, "name"), parameters=_pairs(e.get("parameters", [])))
        for e in entries
    )


def _step(tree: Tree) -> EnsembleStep:
    return EnsembleStep(
        model_name=_one(tree, "model_name"),
        model_version=int(_one(tree, "model_version", -1)),
        input_map=_pairs(tree.get("input_map", [])),
        output_map=_pairs(tree.get("output_map", [])),
    )
