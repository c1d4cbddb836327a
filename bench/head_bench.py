"""Benchmark of the MC head alone (and a ResNet-50-sized model end to end): latency, peak memory
and the distance to the hardware floor.

Typical usage::

    python bench/head_bench.py            # all rows that fit; `make bench`
    python bench/head_bench.py --quick    # a small subset, about a minute
    python bench/head_bench.py --sections training   # one part; the file keeps the others

Implementations (``impl``):

* ``eager``: the materialised PyTorch layer (``hetexport.layers.mc_softmax``: [B, S, K] samples);
* ``compile``: the same function through ``torch.compile`` (compile time excluded, time-boxed);
* ``chunked``: the memory-lean PyTorch path of ``hetexport.fused`` (a chunk of samples at a time);
* ``fused``: the triton kernel (CUDA only: interpreter timings say nothing about a GPU);
* ``onnxruntime``: the ONNX head (the same math exported, noise bank as initializers), CPU;
* ``served``: the served head as the export writes it (``hetexport.serving.head.ServingGraph``
  traced by ``hetexport.onnx.graph.export_graph``) behind a pass-through backbone, in ONNX
  Runtime: pre-logits [B, D] (D = ``SERVED_PRELOGITS``) -> the head's linear layers -> the
  one-pass statistics, top-k, latent correlation, confusable shares, every output of the
  contract; ``served_plain``: the plain (deterministic) head's served graph at the same K, the
  comparison. Their floor adds the head's weights (read once per call) to the bytes.

Floor (per row): ``max(bytes / copy bandwidth, FLOPs / fp32 matmul rate)``, both rates measured
here at start-up. bytes = every input read once (mu, d, V or v and J, z_R, z_K) and every
output written once (p_bar, three entropies), fp32. FLOPs = ``B S K (2 R + FLOPS_PER_ENTRY)``:
the R-dim dot product for ``V z_R`` plus the per-entry work (diag term, scale, max, exp, sum,
normalise, accumulate, entropy). Rows whose materialised tensors or estimated time do not fit
this machine are skipped with a printed line. Results go to ``bench/results/<device>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
from hetexport.fused import mc_head, triton_available
from hetexport.layers import (
    DeterministicHead,
    HetSoftmaxHead,
    LatentGaussian,
    NoiseBank,
    mc_softmax,
)
from hetexport.model import HetClassifier
from hetexport.onnx.graph import export_graph
from hetexport.serving.head import ServingGraph
from provenance import provenance
from torch import Tensor, nn

RESULTS_DIR = Path(__file__).parent / "results"
MEASURES = ["bench/head_bench.py", "export/src/hetexport/fused", "export/src/hetexport/layers",
            "export/src/hetexport/onnx", "export/src/hetexport/serving",
            "export/src/hetexport/class_correlation.py"]
"""What the figures measure (each section's provenance): the heads' code and this script."""
TEMPERATURE = 1.5
FLOPS_PER_ENTRY = 10
"""Per (b, s, k) work besides the R-dim dot product (see module doc)."""
BYTES_PER_FLOAT = 4
CPU_MATERIALISED_BUDGET = 1 << 27
"""Largest B*S*K the materialised impls may allocate on CPU (0.5 GiB per [B, S, K] tensor;
the eager layer holds several at once)."""
LIVE_SAMPLE_TENSORS = 4
"""[B, S, K] tensors the eager head holds at once (samples, softmax, log-softmax, product)."""
ROW_TIME_BUDGET_S = 6.0
"""Skip a row whose estimated single-call time (floor x CPU_SLOWDOWN_GUESS) exceeds this."""
CPU_SLOWDOWN_GUESS = 4.0
COMPILE_BUDGET_S = 240.0
"""Total time torch.compile may spend compiling on this run; later compile rows are skipped."""
MIN_REPEATS, MAX_REPEATS, REPEAT_TIME_S = 3, 20, 2.0
SLOW_CALL_S = 1.5
"""A call slower than this is timed once after warm-up (the median of 1), to bound the run."""
RSS_SAMPLE_S = 0.002


@dataclass(frozen=True)
class HeadConfig:
    """One benchmark shape: K classes, R factors, S samples, parameter-efficient or dense."""

    classes: int
    factors: int
    samples: int
    efficient: bool


SERVED_SAMPLES = 128
"""S the shipped HET model bakes (``make models``: a fitted bank, as exact as plain MC with
S = 1000 on the demo); the head rows at K = 10 and 1000 run it next to S = 1000."""
FULL_CONFIGS = (
    HeadConfig(10, 6, SERVED_SAMPLES, False),
    HeadConfig(10, 6, 1000, False),
    HeadConfig(1000, 15, SERVED_SAMPLES, False),
    HeadConfig(1000, 15, 1000, False),
    HeadConfig(1000, 15, 5000, False),
    HeadConfig(21843, 50, 1000, True),
)
FULL_BATCHES = (1, 32, 256)
QUICK_CONFIGS = (*FULL_CONFIGS[:4], FULL_CONFIGS[5])
"""K = 10 and 1000 at S = 128 and 1000, and K = 21843 (batch 1 only: a larger batch is over the
CPU budget)."""
QUICK_BATCHES = (1, 32)


@dataclass
class Row:
    impl: str
    K: int
    R: int
    S: int
    B: int
    ms: float
    floor_ms: float
    ratio: float
    peak_mb: float
    parameter_efficient: bool
    note: str = ""


@dataclass(frozen=True)
class Machine:
    """Measured rates: copy bandwidth (bytes/s, read + write) and fp32 matmul rate (FLOP/s)."""

    device: str
    copy_bytes_per_s: float
    matmul_flops_per_s: float

    def floor_s(self, bytes_moved: float, flops: float) -> float:
        return max(bytes_moved / self.copy_bytes_per_s, flops / self.matmul_flops_per_s)


# ---- machine -----------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    raw = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-" + _cpu_model()
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}-{psutil.cpu_count()}cores"
    return f"{psutil.cpu_count()}cores"


def measure_machine(device: torch.device) -> Machine:
    """Copy bandwidth from a 256 MiB tensor copy, matmul rate from square fp32 matmuls."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    matmul_s = _median_time(lambda: a @ b, device, repeats=5)
    return Machine(device_name(device), _copy_bandwidth(device), 2 * n**3 / matmul_s)


def _copy_bandwidth(device: torch.device) -> float:
    """Bytes per second (read + write) of a 256 MiB device-to-device copy."""
    elements = (256 << 20) // BYTES_PER_FLOAT
    src, dst = torch.randn(elements, device=device), torch.empty(elements, device=device)
    seconds = _median_time(lambda: dst.copy_(src), device, repeats=5)
    return 2 * elements * BYTES_PER_FLOAT / seconds


# ---- inputs and implementations ----------------------------------------------------------------


def make_inputs(
    cfg: HeadConfig, batch: int, device: torch.device
) -> tuple[LatentGaussian, NoiseBank]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    mean, scale = randn(batch, cfg.classes), randn(batch, cfg.classes).abs() + 0.1
    if cfg.efficient:
        latent = LatentGaussian(mean, scale, factor_scale=randn(batch, cfg.classes),
                                shared_factors=0.3 * randn(cfg.classes, cfg.factors))
    else:
        latent = LatentGaussian(mean, scale, 0.3 * randn(batch, cfg.classes, cfg.factors))
    noise = NoiseBank.fixed(cfg.samples, cfg.factors, cfg.classes, seed=1).to(device)
    return latent, noise


def eager_head(latent: LatentGaussian, noise: NoiseBank) -> tuple[Tensor, Tensor, Tensor]:
    """The materialised head: p_bar, predictive and expected entropy."""
    averaged = mc_softmax(latent, noise, torch.tensor(TEMPERATURE, device=latent.mean.device))
    return averaged.probs, averaged.predictive_entropy, averaged.expected_entropy


def streamed_head(latent: LatentGaussian, noise: NoiseBank,
                  impl: str) -> tuple[Tensor, Tensor, Tensor]:
    """The head without [B, S, K]: ``impl`` "torch" (chunked) or "triton" (fused kernel)."""
    out = mc_head(latent, noise, TEMPERATURE, impl=impl)
    return out.probs, out.predictive_entropy, out.expected_entropy


class OnnxHead(nn.Module):
    """The eager head as a module over latent tensors, noise bank as buffers (for ONNX)."""

    def __init__(self, noise: NoiseBank, shared_factors: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("noise_factors", noise.factor_noise.cpu())
        self.register_buffer("noise_diag", noise.diag_noise.cpu())
        self.shared = shared_factors is not None
        if self.shared:
            self.register_buffer("shared_factors", shared_factors.cpu())

    def forward(self, mean: Tensor, scale: Tensor, factors: Tensor) -> tuple[Tensor, ...]:
        if self.shared:
            latent = LatentGaussian(mean, scale, factor_scale=factors,
                                    shared_factors=self.shared_factors)
        else:
            latent = LatentGaussian(mean, scale, factors)
        return eager_head(latent, NoiseBank(self.noise_factors, self.noise_diag))


def onnx_runner(latent: LatentGaussian, noise: NoiseBank, workdir: Path) -> Callable[[], object]:
    import warnings

    import onnxruntime

    factors = latent.factor_scale if latent.parameter_efficient else latent.factors
    module = OnnxHead(noise, latent.shared_factors)
    args = (latent.mean.cpu(), latent.scale.cpu(), factors.cpu())
    path = workdir / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=["mean", "scale", "factors"],
                          output_names=["probs", "predictive", "expected"], dynamo=False,
                          dynamic_axes={n: {0: "B"} for n in ("mean", "scale", "factors")})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"mean": args[0].numpy(), "scale": args[1].numpy(), "factors": args[2].numpy()}
    return lambda: session.run(None, feed)


SERVED_PRELOGITS = 512
"""D of the served rows' head (a ResNet-18's pre-logits)."""
SERVED_TOP_K, SERVED_CONFUSABLE = 5, 3
SERVED_IMPLS = ("served", "served_plain")


class _PassThrough(nn.Module):
    """The served rows' backbone: pre-logits [B, D, 1, 1] as they are, [B, D]."""

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1)


def served_runner(cfg: HeadConfig, batch: int, *, plain: bool) -> Callable[[], object]:
    """The served graph of a random head of ``cfg``'s shape (plain: a deterministic head of
    the same K) in ONNX Runtime, on random pre-logits."""
    import onnxruntime

    torch.manual_seed(0)
    if plain:
        head, bank = DeterministicHead(SERVED_PRELOGITS, cfg.classes), None
    else:
        head = HetSoftmaxHead(SERVED_PRELOGITS, cfg.classes, num_factors=cfg.factors,
                              temperature=TEMPERATURE, parameter_efficient=cfg.efficient)
        bank = NoiseBank.fixed(cfg.samples, cfg.factors, cfg.classes, seed=1,
                               design="moment_matched_sobol")
    graph = ServingGraph(HetClassifier(_PassThrough(), head).eval(), noise=bank,
                         top_k=min(SERVED_TOP_K, cfg.classes),
                         num_confusable=min(SERVED_CONFUSABLE, cfg.classes - 1))
    model = export_graph(graph, (SERVED_PRELOGITS, 1, 1)).SerializeToString()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    prelogits = torch.randn(batch, SERVED_PRELOGITS, 1, 1,
                            generator=torch.Generator().manual_seed(0)).numpy()
    return lambda: session.run(None, {"images": prelogits})


def served_weight_bytes(cfg: HeadConfig, *, plain: bool) -> float:
    """The served head's weights, read once per call: mu's layer, and for HET d's and V's
    (or v's and J)."""
    per_class = 1 if plain else (3 if cfg.efficient else 2 + cfg.factors)
    shared = 0 if plain or not cfg.efficient else cfg.classes * cfg.factors
    return ((SERVED_PRELOGITS + 1) * cfg.classes * per_class + shared) * BYTES_PER_FLOAT


# ---- measurement -------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], device: torch.device, *, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(median seconds, peak extra memory in MB) of fn after one warm-up call.

    Peak memory: CUDA's max_memory_allocated over the warm-up call; on CPU the peak RSS above
    the starting RSS, the kernel's high-water mark (see ``_peak_rss_mb`` and ``_exact_rss``).
    """
    start = time.perf_counter()
    peak_mb = _peak_memory_mb(fn, device)
    min_repeats = 1 if time.perf_counter() - start > SLOW_CALL_S else MIN_REPEATS
    times: list[float] = []
    deadline = time.perf_counter() + REPEAT_TIME_S
    while len(times) < min_repeats or (len(times) < MAX_REPEATS and time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_mb


def _peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with _exact_rss():
        return _peak_rss_mb(fn)


def _peak_rss_mb(fn: Callable[[], object]) -> float:
    """Peak RSS of ``fn`` above the RSS it started at. Exact where the kernel lets a process
    reset its high-water mark (Linux: ``5`` into ``/proc/self/clear_refs``, then ``VmHWM``);
    otherwise sampled every RSS_SAMPLE_S, which can miss a short peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return _sampled_peak_rss_mb(fn)
    base = psutil.Process().memory_info().rss
    fn()
    return (_high_water_mark_bytes() - base) / 2**20


def _high_water_mark_bytes() -> int:
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("no VmHWM in /proc/self/status")
    return int(match.group(1)) * 1024


def _sampled_peak_rss_mb(fn: Callable[[], object]) -> float:
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(RSS_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return (peak[0] - base) / 2**20


def _reexec_with_one_malloc_arena() -> None:
    """Restart once with ``MALLOC_ARENA_MAX=1``: with per-thread arenas (the RSS sampler is a
    second thread) blocks freed in one arena were not reused by the next allocations and RSS
    overstated live memory; glibc reads this setting only at start-up."""
    if os.environ.get("MALLOC_ARENA_MAX") != "1":
        os.environ["MALLOC_ARENA_MAX"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])


@contextlib.contextmanager
def _exact_rss() -> Iterator[None]:
    """While measuring a peak, map every block of PEAK_MMAP_THRESHOLD_BYTES or more on its own
    (freed at once, so RSS follows live memory; heap fragmentation otherwise kept freed chunks
    resident, 10x the chunked path's live memory); timed calls run with TIMED_MMAP_THRESHOLD_BYTES
    (glibc's dynamic maximum), so they do not pay a page fault per block."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, PEAK_MMAP_THRESHOLD_BYTES)
        libc.malloc_trim(0)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, TIMED_MMAP_THRESHOLD_BYTES)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: peaks may be overstated
        return None


M_MMAP_THRESHOLD = -3
PEAK_MMAP_THRESHOLD_BYTES = 1 << 20
TIMED_MMAP_THRESHOLD_BYTES = 32 << 20


def head_cost(cfg: HeadConfig, batch: int) -> tuple[float, float]:
    """(bytes, FLOPs) of the head per the module doc."""
    k, r, s = cfg.classes, cfg.factors, cfg.samples
    factor_floats = batch * k + k * r if cfg.efficient else batch * k * r
    inputs = 2 * batch * k + factor_floats + s * r + s * k
    outputs = batch * k + 3 * batch
    flops = batch * s * k * (2 * r + FLOPS_PER_ENTRY)
    return (inputs + outputs) * BYTES_PER_FLOAT, flops


# ---- rows --------------------------------------------------------------------------------------


def head_rows(machine: Machine, device: torch.device, configs, batches, impls, log) -> list[Row]:
    rows: list[Row] = []
    compile_spent = 0.0
    for cfg in configs:
        for batch in batches:
            bytes_moved, flops = head_cost(cfg, batch)
            entries = batch * cfg.samples * cfg.classes
            for impl in impls:
                weights = (served_weight_bytes(cfg, plain=impl == "served_plain")
                           if impl in SERVED_IMPLS else 0.0)
                floor_s = machine.floor_s(bytes_moved + weights, flops)
                reason = _skip_reason(impl, device, entries, floor_s, compile_spent)
                tag = (f"{impl:<11} K={cfg.classes:<5} R={cfg.factors:<2} "
                       f"S={cfg.samples:<4} B={batch:<3}")
                if reason:
                    log(f"skipped {tag}: {reason}")
                    continue
                latent, noise = make_inputs(cfg, batch, device)
                try:
                    fn, compile_s = (
                        (served_runner(cfg, batch, plain=impl == "served_plain"), 0.0)
                        if impl in SERVED_IMPLS else _implementation(impl, latent, noise))
                except Exception as exc:  # noqa: BLE001 - a failed compile/export is a skipped row
                    log(f"skipped {tag}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                    continue
                compile_spent += compile_s
                try:
                    seconds, peak_mb = timed(fn, device)
                except torch.OutOfMemoryError:
                    log(f"skipped {tag}: out of device memory")
                    del latent, noise, fn
                    torch.cuda.empty_cache()
                    continue
                note = f"compile {compile_s:.1f}s excluded" if impl == "compile" else ""
                row = Row(impl, cfg.classes, cfg.factors, cfg.samples, batch, 1e3 * seconds,
                          1e3 * floor_s, seconds / floor_s, peak_mb, cfg.efficient, note)
                rows.append(row)
                log(f"{tag}  {row.ms:10.2f} ms  floor {row.floor_ms:8.3f} ms  "
                    f"x{row.ratio:7.1f}  peak {row.peak_mb:8.1f} MB {note}")
                del latent, noise, fn
    return rows


def _skip_reason(impl: str, device: torch.device, entries: int, floor_s: float,
                 compile_spent: float) -> str:
    on_cpu = device.type == "cpu"
    if impl == "fused" and on_cpu:
        return ("no CUDA here; the kernel would run in the triton interpreter, whose timings "
                "are meaningless")
    if impl == "fused" and not triton_available():
        return "triton is not installed"
    if impl == "served_plain":
        return ""  # no samples
    if impl in ("eager", "compile") and not on_cpu and (
        entries * BYTES_PER_FLOAT * LIVE_SAMPLE_TENSORS
        > torch.cuda.get_device_properties(device).total_memory
    ):
        return f"{LIVE_SAMPLE_TENSORS} live [B, S, K] tensors do not fit the GPU's memory"
    # ONNX Runtime runs on the host CPU on every machine (the CPU execution provider)
    if (impl in ("onnxruntime", "served") or (impl in ("eager", "compile") and on_cpu)) and (
        entries > CPU_MATERIALISED_BUDGET
    ):
        return (f"materialises B*S*K = {entries:.2e} floats per tensor, over the CPU "
                f"budget of {CPU_MATERIALISED_BUDGET:.2e}")
    if on_cpu and floor_s * CPU_SLOWDOWN_GUESS > ROW_TIME_BUDGET_S:
        return (f"estimated {floor_s * CPU_SLOWDOWN_GUESS:.0f} s per call, over the "
                f"{ROW_TIME_BUDGET_S:.0f} s row budget")
    if impl == "compile" and compile_spent > COMPILE_BUDGET_S:
        return (f"torch.compile already spent {compile_spent:.0f} s compiling "
                f"(budget {COMPILE_BUDGET_S:.0f} s)")
    return ""


def _implementation(
    impl: str, latent: LatentGaussian, noise: NoiseBank
) -> tuple[Callable[[], object], float]:
    """(the call to time, compile seconds)."""
    if impl == "eager":
        return (lambda: eager_head(latent, noise)), 0.0
    if impl in ("chunked", "fused"):
        engine = "torch" if impl == "chunked" else "triton"
        return (lambda: streamed_head(latent, noise, engine)), 0.0
    if impl == "onnxruntime":
        workdir = Path(tempfile.mkdtemp(prefix="head_bench_"))
        return onnx_runner(latent, noise, workdir), 0.0
    if impl == "compile":
        compiled = torch.compile(eager_head, dynamic=False)
        start = time.perf_counter()
        compiled(latent, noise)
        _sync(latent.mean.device)
        return (lambda: compiled(latent, noise)), time.perf_counter() - start
    raise ValueError(f"unknown impl {impl!r}")


# ---- end to end: ResNet-50-sized backbone ------------------------------------------------------


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1, x4 expansion, projection shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50_backbone() -> nn.Module:
    """ResNet-50 layout (3, 4, 6, 3 bottlenecks; 25.5 M parameters with a 1000-way head),
    224x224 RGB -> 2048 pre-logits. Plain torch: no torchvision here."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    in_ch = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(in_ch, width, stride if i == 0 else 1))
            in_ch = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


END_TO_END_ROUNDS = 5


def end_to_end_rows(device: torch.device, batch: int, log) -> list[dict]:
    """ResNet-50 + det head vs + HET head (K=1000, R=15, S=1000), end to end at ``batch``."""
    from hetexport.layers import DeterministicHead, HetSoftmaxHead

    torch.manual_seed(0)
    backbone = resnet50_backbone().to(device).eval()
    det = DeterministicHead(2048, 1000).to(device).eval()
    het = HetSoftmaxHead(2048, 1000, num_factors=15, eval_mc_samples=1000).to(device).eval()
    noise = NoiseBank.fixed(1000, 15, 1000, seed=1).to(device)
    images = torch.randn(batch, 3, 224, 224, device=device)
    tau = float(het.temperature())
    variants: dict[str, Callable[[], object]] = {
        "det": lambda: det(backbone(images)),
        "het_eager": lambda: het(backbone(images), noise=noise),
        "het_chunked": lambda: mc_head(het.latent(backbone(images)), noise, tau, impl="torch"),
    }
    if device.type == "cuda" and triton_available():
        variants["het_fused"] = lambda: mc_head(het.latent(backbone(images)), noise, tau,
                                                impl="triton")
    with torch.no_grad():
        peaks = {name: _peak_memory_mb(fn, device) for name, fn in variants.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(END_TO_END_ROUNDS):  # interleaved, so drift on a shared machine hits all
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    results = [{"model": "resnet50", "head": name, "B": batch,
                "ms": 1e3 * statistics.median(times[name]), "peak_mb": peaks[name]}
               for name in variants]
    base = results[0]["ms"]
    for r in results:
        r["overhead_vs_det"] = r["ms"] / base - 1.0
        log(f"resnet50 + {r['head']:<12} B={batch}: {r['ms']:9.1f} ms  "
            f"(+{100 * r['overhead_vs_det']:6.1f}% vs det)  peak {r['peak_mb']:8.1f} MB")
    return results


# ---- training memory: materialised vs memory-lean backward -------------------------------------


@dataclass(frozen=True)
class TrainingConfig:
    """One training-memory shape: a head shape and a batch size."""

    head: HeadConfig
    batch: int


TRAINING_CONFIGS = (
    TrainingConfig(HeadConfig(1000, 15, 1000, False), 16),
    TrainingConfig(HeadConfig(21843, 50, 1000, True), 16),
    TrainingConfig(HeadConfig(21843, 50, 1000, True), 256),
)
"""The last shape is where the materialised layer does not fit an 80 GB GPU (nor this 24 GB
CPU machine) and the memory-lean one does."""
MATERIALISED_TRAINING_BYTES_PER_ENTRY = 24
"""Peak bytes per B*S*K entry of one materialised forward + backward (six fp32 [B, S, K]
tensors live at once; measured 8086 MB at K=21843 R=50 S=1000 B=16, 349 M entries). On CPU a
materialised step whose estimate exceeds ``CPU_MEMORY_FRACTION`` of the available memory is not
run (the kernel's OOM killer would end the benchmark); on CUDA it is run and an out-of-memory
error is recorded as such."""
CPU_MEMORY_FRACTION = 0.8


def training_rows(device: torch.device, log) -> list[dict]:
    """Peak memory and time of one forward + backward of the HET softmax loss, the materialised
    layer (``mc_softmax``) vs the memory-lean one (``mc_softmax_lean``). A row that could not
    run has ``ms`` and ``peak_mb`` None and says why in ``note``."""
    from hetexport.fused import mc_softmax_lean

    rows = []
    for config in TRAINING_CONFIGS:
        cfg, batch = config.head, config.batch
        latent, noise = make_inputs(cfg, batch, device)
        leaves = [t.requires_grad_() for t in (latent.mean, latent.scale, latent.factors,
                                                latent.factor_scale, latent.shared_factors)
                  if t is not None]
        targets = torch.zeros(batch, dtype=torch.long, device=device)
        tau = torch.tensor(TEMPERATURE, device=device, requires_grad=True)
        for name, average in (("materialised", mc_softmax), ("lean", mc_softmax_lean)):
            row = {"impl": name, "K": cfg.classes, "R": cfg.factors, "S": cfg.samples,
                   "B": batch, "ms": None, "peak_mb": None, "note": ""}
            step = functools.partial(_training_step, average, latent, noise, tau, targets, leaves)
            row["note"] = _training_skip_reason(name, config, device)
            if not row["note"]:
                try:
                    seconds, row["peak_mb"] = timed(step, device)
                    row["ms"] = 1e3 * seconds
                except torch.OutOfMemoryError:
                    row["note"] = "out of device memory: the step raised OutOfMemoryError"
                    torch.cuda.empty_cache()
            rows.append(row)
            tag = (f"training {name:<13} K={cfg.classes:<5} R={cfg.factors:<2} "
                   f"S={cfg.samples:<4} B={batch:<3}")
            log(f"{tag}: {row['ms']:9.1f} ms  peak {row['peak_mb']:8.1f} MB" if row["ms"]
                is not None else f"{tag}: not run: {row['note']}")
        del latent, noise, leaves
    return rows


def materialised_training_bytes(config: TrainingConfig) -> float:
    """Estimated peak bytes of a materialised training step (see the constant's doc)."""
    cfg = config.head
    return config.batch * cfg.samples * cfg.classes * MATERIALISED_TRAINING_BYTES_PER_ENTRY


def _training_skip_reason(impl: str, config: TrainingConfig, device: torch.device) -> str:
    if impl != "materialised" or device.type != "cpu":
        return ""
    needed = materialised_training_bytes(config)
    usable = CPU_MEMORY_FRACTION * psutil.virtual_memory().available
    if needed <= usable:
        return ""
    return (f"does not fit: needs ~{needed / 2**30:.0f} GiB (an estimate, not a measurement: "
            f"{MATERIALISED_TRAINING_BYTES_PER_ENTRY} B per B*S*K entry), "
            f"{usable / 2**30:.0f} GiB usable here")


def _training_step(average, latent: LatentGaussian, noise: NoiseBank, tau: Tensor,
                   targets: Tensor, leaves: list[Tensor]) -> None:
    probs = average(latent, noise, tau).probs
    loss = -torch.log(probs.gather(1, targets[:, None]).clamp_min(1e-7)).mean()
    torch.autograd.grad(loss, [*leaves, tau])




# ---- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    _reexec_with_one_malloc_arena()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (K<=1000, B<=32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and ONNX Runtime (1: robust when shared)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these parts; the others are kept from the results file")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default: results/<device>.json, "
                             "results/<device>-quick.json with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def log(line: str) -> None:
        print(line, flush=True)

    if device.type == "cpu":
        log("no CUDA: GPU rows (fused, and eager/compile on the GPU) are skipped; CPU rows only")
    machine = measure_machine(device)
    log(f"device {machine.device}: copy {machine.copy_bytes_per_s / 1e9:.1f} GB/s, "
        f"fp32 matmul {machine.matmul_flops_per_s / 1e9:.1f} GFLOP/s")
    configs, batches = (
        (QUICK_CONFIGS, QUICK_BATCHES) if args.quick else (FULL_CONFIGS, FULL_BATCHES)
    )
    sections: dict[str, list] = {}
    if "heads" in args.sections:
        impls = ("eager", "compile", "chunked", "fused", "onnxruntime", *SERVED_IMPLS)
        rows = head_rows(machine, device, configs, batches, impls, log)
        sections["rows"] = [asdict(r) for r in rows]
        print_table(rows)
    if "end_to_end" in args.sections and not args.quick:
        sections["end_to_end"] = end_to_end_rows(device, 32, log)
    if "training" in args.sections and not args.quick:
        sections["training"] = training_rows(device, log)
    suffix = "-quick" if args.quick else ""  # a subset never replaces a full run's rows
    output = args.output or RESULTS_DIR / f"{machine.device}{suffix}.json"
    result = merge_results(output, machine, sections, quick=args.quick, threads=args.threads)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {output} ({', '.join(sections) or 'no sections'})")
    return 0


SECTIONS = ("heads", "end_to_end", "training")
"""Parts of a run (``--sections``); their JSON keys are ``rows``, ``end_to_end``, ``training``."""


def merge_results(output: Path, machine: Machine, sections: dict[str, list], *, quick: bool,
                  threads: int) -> dict:
    """The results file's content: the sections measured now over those already in ``output``
    (same device), each with the date it was measured in ``dates`` and its provenance in
    ``provenances``; the top-level ``provenance`` is the oldest section's (None when a section
    kept from an older file has none); the machine's rates are those the head rows' floors
    were computed with."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    previous = json.loads(output.read_text()) if output.is_file() else {}
    if previous.get("device") != machine.device:
        previous = {}
    dates = previous.get("dates") or {key: previous.get("date") for key in
                                      ("rows", "end_to_end", "training") if key in previous}
    result = {key: previous.get(key, []) for key in ("rows", "end_to_end", "training")}
    result.update(sections)
    dates.update({key: now for key in sections})
    provenances = previous.get("provenances", {})
    provenances.update({key: provenance(MEASURES) for key in sections})
    rates = {"copy_gb_per_s": machine.copy_bytes_per_s / 1e9,
             "matmul_gflop_per_s": machine.matmul_flops_per_s / 1e9}
    if "rows" not in sections:  # the rows' floors were computed with the earlier rates
        rates = {key: previous.get(key, value) for key, value in rates.items()}
    kept = [provenances.get(key) for key in result if result[key]]
    oldest = None if None in kept or not kept else min(kept, key=lambda p: p["date"])
    return {"provenance": oldest, "provenances": provenances, "device": machine.device,
            "date": now, "dates": dates, "quick": quick, "threads": threads, **rates, **result}


def print_table(rows: list[Row]) -> None:
    print(f"\n{'impl':<12}{'K':>6}{'R':>4}{'S':>6}{'B':>5}{'ms':>11}{'floor ms':>10}"
          f"{'x floor':>9}{'peak MB':>9}")
    for r in rows:
        print(f"{r.impl:<12}{r.K:>6}{r.R:>4}{r.S:>6}{r.B:>5}{r.ms:>11.2f}{r.floor_ms:>10.3f}"
              f"{r.ratio:>9.1f}{r.peak_mb:>9.1f}")
    groups: dict[tuple, dict[str, float]] = {}
    for r in rows:
        groups.setdefault((r.K, r.R, r.S, r.B), {})[r.impl] = r.ms
    print("\nratios in this run (eager / other):")
    for (k, rr, s, b), by_impl in groups.items():
        if "eager" in by_impl:
            parts = [f"{impl} x{by_impl['eager'] / ms:.2f}"
                     for impl, ms in by_impl.items() if impl not in ("eager", *SERVED_IMPLS)]
            print(f"  K={k} R={rr} S={s} B={b}: " + ", ".join(parts))
    print("\nserved head, HET / plain (the graphs the export writes, per call):")
    for (k, rr, s, b), by_impl in groups.items():
        if "served" in by_impl and "served_plain" in by_impl:
            het, plain = by_impl["served"], by_impl["served_plain"]
            print(f"  K={k} R={rr} S={s} B={b}: {het:.3f} ms / {plain:.3f} ms = x{het / plain:.2f}")


if __name__ == "__main__":
    sys.exit(main())
