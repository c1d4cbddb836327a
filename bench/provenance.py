"""Where a benchmark figure came from: written into every result file under ``bench/results/``.

Every result file carries a top-level ``"provenance"`` object, so a figure quoted in the docs
can be traced to the command that produced it and checked against the code it measured:

* ``command``: the command line that wrote the file (rerun it to reproduce the figures);
* ``commit``: ``git rev-parse HEAD`` when it ran; ``dirty``: True when any of ``measures`` had
  uncommitted changes then (such a result measured code that no commit holds);
* ``measures``: the repository paths the figures depend on: what the benchmark declared (the
  data it reads: model directories, checkpoints; code it measures in another process, such
  as a gateway it did not start) plus what is derived here, not listed by hand: the
  repository code the command runs (``code_closure``: its script and every repository module
  that script imports, followed transitively, including modules started as ``-m NAME`` and
  files copied to run elsewhere) and the repository modules loaded in this process when the
  provenance was taken. A result is stale once any of them differs from ``commit``;
* ``date`` (ISO 8601, UTC) and ``machine`` (architecture, usable cores, CPU model);
  ``load_average_1m``: the machine's 1-minute load average when the file was written (on a
  shared machine, how much else was running: read a figure with it).

Typical usage (from a script in ``bench/``)::

    from provenance import provenance, write_result
    report = {"provenance": provenance(["model_repo/fashion_het"]), ...}
    write_result({...figures...}, "soak", measures=["model_repo"])

``docs/figures.md`` says how the docs cite these files and what
``tests/unit/docs/test_readme_figures.py`` checks (each printed figure against its own field,
staleness with ``measured_paths``). This module itself is never among the measured paths: it
records, it measures nothing.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
RECORDER = Path(__file__).resolve()
"""This module: it records and measures nothing, so no result depends on it."""
SCRIPT_SUFFIXES = (".py", ".sh")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
"""A dotted module name in a string (``"hetgateway.cli"``: started with ``python -m``)."""
SHELL_SCRIPT = re.compile(r"[\w.-]+\.(?:py|sh)\b")
SHELL_MODULE = re.compile(r"-m\s+([A-Za-z_][\w.]*)")


def provenance(measures: Sequence[str], *, command: str | None = None,
               loaded: bool = True) -> dict[str, object]:
    """The provenance object for a result of ``command`` (default: this process's command
    line) that reads the declared ``measures`` (paths from the repo root); its ``measures``
    also hold the code the command runs and, with ``loaded``, the repository modules loaded
    now (pass False where this process loaded more than the measurement runs: a test
    session)."""
    command = command or _invocation()
    modules = loaded_repository_modules() if loaded else []
    measured = measured_paths(command, [*measures, *modules])
    return {
        "command": command,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", *measured)),
        "measures": measured,
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine_description(),
        "load_average_1m": os.getloadavg()[0],
    }


def write_result(report: dict[str, object], benchmark: str, *, measures: Sequence[str],
                 machine: str | None = None, command: str | None = None,
                 directory: Path = RESULTS_DIR) -> Path:
    """Write ``report`` with its provenance first to ``<directory>/<benchmark>-<machine>.json``
    (``bench/results/``; ``machine`` defaults to ``machine_slug()``); prints and returns the
    path."""
    output = directory / f"{benchmark}-{machine or machine_slug()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    content = {"provenance": provenance(measures, command=command), **report}
    output.write_text(json.dumps(content, indent=2) + "\n")
    print(f"wrote {output}")
    return output


def measured_paths(command: str, declared: Iterable[str] = (), *,
                   root: Path = REPO_ROOT) -> list[str]:
    """Every repository path a result of ``command`` depends on: ``declared`` plus the code
    the command runs (``code_closure`` of ``command_entries``), sorted, without duplicates."""
    return sorted({*declared, *code_closure(command_entries(command, root=root), root=root)})


def command_entries(command: str, *, root: Path = REPO_ROOT) -> list[Path]:
    """The repository files ``command`` starts: scripts (``bench/soak.py``,
    ``bash tests/load/run_locust.sh``), modules run with ``-m``, the components' console
    scripts (``.venv/bin/hetexport`` -> ``hetexport.cli``) and, for ``make TARGET``, what the
    target's recipe starts."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: read it as plain words
        words = command.split()
    if words[:1] == ["make"]:
        recipes = make_recipes(root)
        return [entry for target in words[1:] for line in recipes.get(target, "").splitlines()
                for entry in command_entries(line.replace("$(PY)", "python"), root=root)]
    scripts = _console_scripts(root)
    entries: list[Path] = []
    here = root
    for index, word in enumerate(words):
        if index and words[index - 1] == "cd":
            here = root / word
        elif word.endswith(SCRIPT_SUFFIXES) and (here / word).is_file():
            entries.append((here / word).resolve())
        elif index and words[index - 1] == "-m":
            entries += module_files(word, _source_roots(root))
        elif Path(word).name in scripts and (index == 0 or "/" in word):
            entries += module_files(scripts[Path(word).name], _source_roots(root))
    return entries


def make_recipes(root: Path = REPO_ROOT) -> dict[str, str]:
    """The Makefile's targets and the text of their recipes."""
    recipes: dict[str, str] = {}
    target = None
    for line in (root / "Makefile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("\t") and target:
            recipes[target] += line.strip() + "\n"
        elif match := re.match(r"^([\w-]+):(?!=)", line):
            target = match[1]
            recipes[target] = ""
        elif line and not line.startswith("#"):
            target = None
    return recipes


def code_closure(entries: Iterable[Path], *, root: Path = REPO_ROOT) -> list[str]:
    """The repository files that running ``entries`` executes, found without running them:
    each file's imports (absolute, relative, inside functions too; a package's
    ``__init__.py`` with it), dotted module names in its strings (``-m NAME``,
    ``importlib``) and script files it names (``"ort_model.py"`` beside it, a shell script's
    ``locustfile.py``), followed transitively. Paths relative to ``root``, sorted; never this
    module (``RECORDER``)."""
    root = root.resolve()
    seen: set[Path] = set()
    pending = [Path(entry).resolve() for entry in entries]
    while pending:
        path = pending.pop()
        if path in seen or not _in_repository(path, root) or not path.is_file():
            continue
        seen.add(path)
        pending += _references(path, root)
    return sorted(str(path.relative_to(root)) for path in seen)


def module_files(name: str, search: Sequence[Path]) -> list[Path]:
    """The files importing module ``name`` executes, from the first of ``search`` that holds
    it: each package's ``__init__.py`` on the way, then the module; [] when none does."""
    parts = name.split(".")
    for base in search:
        target = base.joinpath(*parts)
        for found in (target.with_suffix(".py"), target / "__init__.py"):
            if found.is_file():
                inits = [base.joinpath(*parts[:depth], "__init__.py")
                         for depth in range(1, len(parts))]
                return [*(init for init in inits if init.is_file()), found]
    return []


def loaded_repository_modules(*, root: Path = REPO_ROOT) -> list[str]:
    """The repository files of the modules loaded in this process (editable installs
    included; nothing under a hidden directory such as ``.venv``), relative to ``root``."""
    files = {Path(module.__file__).resolve() for module in list(sys.modules.values())
             if isinstance(getattr(module, "__file__", None), str)}
    root = root.resolve()
    return sorted(str(path.relative_to(root)) for path in files if _in_repository(path, root))


def _in_repository(path: Path, root: Path) -> bool:
    """A file of the repository's own: under ``root``, not in a hidden directory (``.venv``,
    ``.git``) and not this module."""
    return (path.is_relative_to(root) and path != RECORDER
            and not any(part.startswith(".") for part in path.relative_to(root).parts))


def _references(path: Path, root: Path) -> list[Path]:
    """The repository files ``path`` imports, starts or names as a script."""
    if path.suffix == ".sh":
        text = path.read_text()
        named = [candidate for word in SHELL_SCRIPT.findall(text)
                 for candidate in (path.parent / word, root / word) if candidate.is_file()]
        return named + [file for name in SHELL_MODULE.findall(text)
                        for file in module_files(name, _source_roots(root))]
    if path.suffix != ".py":
        return []
    roots = _source_roots(root)
    in_package = any(path.is_relative_to(source) for source in roots)
    search = roots if in_package else (path.parent, *roots)
    found: list[Path] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [file for alias in node.names for file in module_files(alias.name, search)]
        elif isinstance(node, ast.ImportFrom):
            found += _from_import(node, path, search)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += _named_in_string(node.value, path, search, root)
    return found


def _from_import(node: ast.ImportFrom, path: Path, search: Sequence[Path]) -> list[Path]:
    """``from X import a, b``: X's files and those of the submodules ``X.a``, ``X.b``."""
    names = [alias.name for alias in node.names if alias.name != "*"]
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        package = base.joinpath(*(node.module or "").split(".")) if node.module else base
        candidates = [package.with_suffix(".py"), package / "__init__.py",
                      *(package / f"{name}.py" for name in names),
                      *(package / name / "__init__.py" for name in names)]
        return [candidate for candidate in candidates if candidate.is_file()]
    return [*module_files(node.module or "", search),
            *(file for name in names for file in module_files(f"{node.module}.{name}", search))]


def _named_in_string(value: str, path: Path, search: Sequence[Path], root: Path) -> list[Path]:
    if value.endswith(SCRIPT_SUFFIXES):
        return [candidate for candidate in (path.parent / value, root / value)
                if candidate.is_file()]
    if MODULE_NAME.fullmatch(value):
        return module_files(value, search)
    return []


@functools.cache
def _source_roots(root: Path) -> tuple[Path, ...]:
    """Where the components' packages live: every ``<component>/src``."""
    return tuple(sorted(path.resolve() for path in root.glob("*/src") if path.is_dir()))


@functools.cache
def _console_scripts(root: Path) -> dict[str, str]:
    """The components' console scripts: name -> module (``hetexport`` -> ``hetexport.cli``)."""
    scripts: dict[str, str] = {}
    for pyproject in sorted(root.glob("*/pyproject.toml")):
        declared = tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {})
        scripts |= {name: target.partition(":")[0] for name, target in declared.items()}
    return scripts


def machine_slug() -> str:
    """``x86_64-2cpu``: the short machine name in result file names."""
    return f"{platform.machine()}-{os.cpu_count()}cpu"


def machine_description() -> str:
    """``x86_64, 2 cores, AMD EPYC ...``: architecture, usable cores and the CPU model."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, {_cpu_model()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _invocation() -> str:
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO_ROOT)
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip()
