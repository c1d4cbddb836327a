"""The fused kernels are legal compiled triton, not only interpretable: they compile to H100
(sm_90) machine code with triton's bundled ptxas, no GPU needed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

COMPILE_SCRIPT = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from hetexport.fused import kernel

    assert not kernel.INTERPRETED
    CONSTEXPRS = {"BLOCK_S": 64, "BLOCK_K": 64, "BLOCK_R": 64,
                  "HAS_FACTORS": True, "HAS_FACTOR_SCALE": True}
    FLOATS = ("inv_tau", "inv_samples")
    for fn in (kernel._sample_stats_kernel, kernel._class_average_kernel):
        names = fn.arg_names
        signature = {
            n: "*fp32" if n.endswith("_ptr") else "fp32" if n in FLOATS
            else "constexpr" if n in CONSTEXPRS else "i32"
            for n in names
        }
        constexprs = {(names.index(n),): v for n, v in CONSTEXPRS.items()}
        compiled = triton.compile(ASTSource(fn, signature, constexprs),
                                  target=GPUTarget("cuda", 90, 32))
        assert "cubin" in compiled.asm, fn.__name__
        print(fn.__name__, "sm_90 ok")
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_kernels_compile_for_sm90_without_a_gpu(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path),
           "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("sm_90 ok") == 2
