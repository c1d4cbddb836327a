"""Triton model configurations as small frozen dataclasses, and the builders of each kind.

Typical usage::

    config = onnx_model_config("fashion_het", input_shape=(1, 28, 28), num_classes=10,
                               top_k=5, num_confusable=3)
    gpu = gpu_variant(config)                          # KIND_GPU + TensorRT accelerator
    text = render_config(config)                       # hetexport.repo.pbtxt: the one writer

Three kinds of model, one ``ModelConfig``: an ONNX Runtime model (``platform`` and
``backend``), a Python-backend model (``backend="python"``, no platform) and an ensemble
(``platform="ensemble"``, ``ensemble_steps``, no batching of its own). Only the fields below
are written and read back (``hetexport.repo.pbtxt``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hetcontract import HEAD_OUTPUTS, INPUT_NAME, MODEL_CARD_PARAMETER, OPTIONAL_HEAD_OUTPUTS

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
PYTHON_BACKEND = "python"
ENSEMBLE_PLATFORM = "ensemble"
FP32 = "TYPE_FP32"
KIND_CPU = "KIND_CPU"
KIND_GPU = "KIND_GPU"
LATEST_VERSION = -1
"""An ensemble step's ``model_version``: the newest version the composing model serves."""
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
    """``preferred_batch_sizes`` empty: Triton batches whatever is queued."""

    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    queue_policy: QueuePolicy | None = None
    """None: no ``default_queue_policy`` (see ``QueuePolicy`` for why that is the default)."""


@dataclass(frozen=True)
class InstanceGroup:
    """``kind`` None: not written, so Triton places the instances (a GPU where present)."""

    count: int = 1
    kind: str | None = KIND_CPU


@dataclass(frozen=True)
class Warmup:
    """One warmup request: ``batch_size`` images of ``dims``, zeros or random data."""

    name: str
    batch_size: int
    dims: tuple[int, ...]
    random_data: bool = False
    input_name: str = INPUT_NAME
    data_type: str = FP32


@dataclass(frozen=True)
class GpuAccelerator:
    """A ``gpu_execution_accelerator`` entry (e.g. ``tensorrt`` with precision and workspace)."""

    name: str = "tensorrt"
    parameters: tuple[tuple[str, str], ...] = (
        ("precision_mode", "FP32"),
        ("max_workspace_size_bytes", str(DEFAULT_TRT_WORKSPACE_BYTES)),
    )


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: ``model_name`` with its tensors mapped (model's name, the
    ensemble's name)."""

    model_name: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]
    model_version: int = LATEST_VERSION


@dataclass(frozen=True)
class ModelConfig:
    """One model's ``config.pbtxt``: ``platform`` / ``backend`` None are not written."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    platform: str | None = PLATFORM
    backend: str | None = BACKEND
    dynamic_batching: DynamicBatching | None = field(default_factory=DynamicBatching)
    instance_groups: tuple[InstanceGroup, ...] = (InstanceGroup(),)
    warmup: tuple[Warmup, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    gpu_accelerators: tuple[GpuAccelerator, ...] = ()
    ensemble_steps: tuple[EnsembleStep, ...] = ()

    def parameter(self, key: str) -> str | None:
        return dict(self.parameters).get(key)

    def model_card(self) -> dict[str, Any] | None:
        """The model card JSON parameter, parsed (None when absent)."""
        text = self.parameter(MODEL_CARD_PARAMETER)
        return None if text is None else json.loads(text)

    def with_parameter(self, key: str, value: str) -> ModelConfig:
        """The same config with ``key`` set to ``value`` (in place when present, else last)."""
        keys = [name for name, _ in self.parameters]
        if key in keys:
            parameters = tuple((name, value if name == key else old)
                               for name, old in self.parameters)
        else:
            parameters = (*self.parameters, (key, value))
        return replace(self, parameters=parameters)


def head_output_configs(
    *, num_classes: int, top_k: int, num_confusable: int, reshape_scalars: bool = True,
    optional: bool = False,
) -> tuple[TensorConfig, ...]:
    """``hetcontract.HEAD_OUTPUTS`` as Triton outputs, and ``OPTIONAL_HEAD_OUTPUTS`` after
    them when ``optional`` (the exported ONNX graph has them; the GPU ensemble's Python head
    does not).

    Per-example scalars ([B] in the graph) are ``dims: [1]`` with ``reshape { shape: [] }``
    (``reshape_scalars``); an ensemble, which sees its last step's [B, 1], declares them
    without the reshape.
    """
    sizes = {"k_max": top_k, "m": num_confusable, "K": num_classes}
    configs = []
    for spec in (*HEAD_OUTPUTS, *(OPTIONAL_HEAD_OUTPUTS if optional else ())):
        dims = tuple(sizes[s] for s in spec.shape[1:])
        if dims:
            configs.append(TensorConfig(spec.name.value, spec.triton_dtype, dims))
        else:
            configs.append(TensorConfig(spec.name.value, spec.triton_dtype, (1,),
                                        reshape=() if reshape_scalars else None))
    return tuple(configs)


def images_input(input_shape: Sequence[int]) -> TensorConfig:
    """The ``hetcontract.INPUT_NAME`` input: float32 images [C, H, W] per example."""
    return TensorConfig(INPUT_NAME, FP32, tuple(input_shape))


def onnx_model_config(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    top_k: int,
    num_confusable: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    dynamic_batching: DynamicBatching | None = None,
    instance_count: int = 1,
) -> ModelConfig:
    """The CPU config of an exported HET model, with zero and random warmup requests (the
    model card parameter is added where the model is written: ``hetexport.repo.layout``)."""
    if dynamic_batching is None:
        preferred = tuple(s for s in DEFAULT_PREFERRED_BATCH_SIZES if s <= max_batch_size)
        dynamic_batching = DynamicBatching(preferred_batch_sizes=preferred or (max_batch_size,))
    return ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        inputs=(images_input(input_shape),),
        outputs=head_output_configs(
            num_classes=num_classes, top_k=top_k, num_confusable=num_confusable, optional=True
        ),
        dynamic_batching=dynamic_batching,
        instance_groups=(InstanceGroup(count=instance_count),),
        warmup=(
            Warmup("zeros", 1, tuple(input_shape)),
            Warmup("random", min(8, max_batch_size), tuple(input_shape), random_data=True),
        ),
    )


def placed_model_config(
    name: str,
    *,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    max_batch_size: int,
    max_queue_delay_us: int,
    platform: str | None = None,
    backend: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """A dynamically batched model with one instance that Triton places (a GPU where present,
    else the CPU): the GPU ensemble's backbone and Python-backend head."""
    return ModelConfig(
        name=name, max_batch_size=max_batch_size, inputs=tuple(inputs), outputs=tuple(outputs),
        platform=platform, backend=backend,
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(),
                                         max_queue_delay_us=max_queue_delay_us),
        instance_groups=(InstanceGroup(kind=None),),
        parameters=tuple((parameters or {}).items()),
    )


def ensemble_config(
    name: str,
    *,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    steps: Sequence[EnsembleStep],
    max_batch_size: int,
) -> ModelConfig:
    """An ensemble: no batching or instances of its own (its steps have them)."""
    return ModelConfig(
        name=name, max_batch_size=max_batch_size, inputs=tuple(inputs), outputs=tuple(outputs),
        platform=ENSEMBLE_PLATFORM, backend=None, dynamic_batching=None, instance_groups=(),
        ensemble_steps=tuple(steps),
    )


def same_names(names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """An ensemble step's map that keeps every tensor's name."""
    return tuple((name, name) for name in names)


def gpu_variant(config: ModelConfig, *, accelerator: GpuAccelerator | None = None) -> ModelConfig:
    """The same model on KIND_GPU with a TensorRT (default) execution accelerator."""
    groups = tuple(replace(g, kind=KIND_GPU) for g in config.instance_groups)
    return replace(
        config, instance_groups=groups, gpu_accelerators=(accelerator or GpuAccelerator(),)
    )
