"""Under CI=true a test whose prerequisite (Fashion-MNIST, Chromium, Playwright) is missing
fails instead of skipping, and the installer fails when it cannot install them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[3]
INNER_TESTS = '''
import pytest

def test_needs_the_dataset():
    pytest.skip("prerequisite missing: Fashion-MNIST not installed")

@pytest.mark.skipif(True, reason="prerequisite missing: no Chromium")
def test_needs_the_browser():
    pass

@pytest.mark.skipif(True, reason="needs CUDA")
def test_needs_a_gpu():
    pass
'''


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(INNER_TESTS)
    return pytester


def test_in_ci_a_missing_prerequisite_fails_and_other_skips_stay_skips(inner, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest("-p", "no:cacheprovider", "-rfs")
    result.assert_outcomes(failed=1, errors=1, skipped=1)  # a skipif fails in setup: an error
    result.stdout.fnmatch_lines(["*CI=true and prerequisite missing: Fashion-MNIST*"])


def test_outside_ci_a_missing_prerequisite_skips(inner, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    inner.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=3)


def _installer(tmp_path: Path, *, uid: str) -> subprocess.CompletedProcess[str]:
    """scripts/system-deps.sh with nothing installed, id and apt-get replaced by scripts that
    report ``uid`` and always fail (so the run needs no root and touches nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in {"id": f"echo {uid}", "apt-get": "echo apt-get failed >&2; exit 100"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
           "HETSERVE_FASHION_MNIST_DIR": str(tmp_path / "no-dataset"),
           "HETSERVE_CHROMIUM": "no-such-chromium"}
    return subprocess.run(["bash", str(ROOT / "scripts" / "system-deps.sh")], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


def test_the_installer_fails_loudly_when_it_cannot_install(tmp_path):
    as_user = _installer(tmp_path / "user", uid="1000")
    assert as_user.returncode != 0
    assert "missing system packages: dataset-fashion-mnist chromium" in as_user.stderr
    as_root = _installer(tmp_path / "root", uid="0")
    assert as_root.returncode != 0
    assert "apt-get failed" in as_root.stderr
