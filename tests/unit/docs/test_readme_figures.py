"""README figures cannot drift from what was measured.

Every measured figure in a README sits in a block

    <!-- results: bench/results/<file>.json -->
    ... the figures, and the command that wrote the file ...
    <!-- /results -->

and this module holds each block to its file (``bench/provenance.py`` writes them):

* every number in the block (outside `code`) is in the file, up to the rounding it is printed
  with (``408.6`` stands for anything in [408.55, 408.65]; ``11,864`` is 11864);
* the file's ``provenance`` names a clean tree (``dirty`` false) and a commit that already
  holds the last change to every path it ``measures`` (by git history): a result older than
  the code it measures is stale and must be measured again;
* outside blocks, no measurement: a table row or a sentence with a speed or memory figure (a
  number in ms, s, req/s, img/s, MB, MiB, GB or GiB) must be in a block, unless the row or
  sentence says it is an ``estimate`` (arithmetic, not a measurement) or names a setting or
  a goal (``target``, ``timeout``, ``limit``, ``default``, ``up to``, ``capped``,
  ``constant``), or the figure is in `code`.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
READMES = sorted(ROOT / path for path in subprocess.run(
    ["git", "ls-files", "README.md", "*/README.md"], cwd=ROOT, capture_output=True, text=True,
    check=True).stdout.split())
BLOCK = re.compile(r"^<!-- results: (?P<path>\S+) -->$(?P<body>.*?)^<!-- /results -->$",
                   re.DOTALL | re.MULTILINE)
"""A results block: its markers each on a line of their own."""
OPENING = re.compile(r"^<!-- results: ", re.MULTILINE)
CODE = re.compile(r"`[^`]*`")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.;!?])\s+(?=[A-Z(`*])")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
PRINTED_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,]|\.\d)"
                            r"|(?<![\w.,])\d+(?:\.\d+)?(?![\w]|\.\d)")
"""A number as prose prints it: ``17``, ``408.6``, ``11,864``; not the 50 of ``p50`` nor the
64 of ``x86_64``."""
STORED_NUMBER = re.compile(r"\d+(?:\.\d+)?")
MEASUREMENT = re.compile(r"\d(?:\.\d+)?\s*(?:ms|s|req/s|img/s|requests/s|MB|MiB|GB|GiB)\b")
EXEMPT_WORDS = ("estimate", "target", "timeout", "limit", "default", "up to", "capped",
                "constant")
PROVENANCE_KEYS = {"command", "commit", "dirty", "measures", "date", "machine"}


def blocks() -> list[tuple[Path, str, str]]:
    """(readme, result path, block text) for every results block in every README."""
    return [(readme, match["path"], match["body"]) for readme in READMES
            for match in BLOCK.finditer(readme.read_text())]


def block_id(block: tuple[Path, str, str]) -> str:
    return f"{block[0].relative_to(ROOT)}:{block[1]}"


def printed_numbers(text: str) -> list[str]:
    """The numbers a reader sees in ``text``, outside inline code and comments."""
    prose = CODE.sub(" ", COMMENT.sub(" ", text))
    return PRINTED_NUMBER.findall(prose)


def stored_numbers(value: object) -> list[float]:
    """Every number in a JSON value, including those inside its strings (``"30s"``)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, str):
        return [float(n) for n in STORED_NUMBER.findall(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in stored_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in stored_numbers(v)]
    return []


def holds(stored: list[float], printed: str) -> bool:
    """Whether a stored number rounds to ``printed`` (at the decimals it is printed with)."""
    digits = printed.replace(",", "")
    decimals = len(digits.partition(".")[2])
    half_step = 0.5 * 10 ** -decimals + 1e-9
    value = float(digits)
    return any(abs(abs(n) - value) <= half_step for n in stored)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def last_change(path: str) -> str:
    """The last commit that changed ``path`` (a file or a folder)."""
    commit = git("log", "-1", "--format=%H", "--", path).stdout.strip()
    assert commit, f"git knows no commit changing {path}"
    return commit


def measured_outside_blocks(text: str) -> list[str]:
    """Table rows and sentences outside results blocks that quote a speed or memory
    measurement (fenced code blocks are commands and output, not prose: skipped)."""
    outside = COMMENT.sub(" ", BLOCK.sub(" ", FENCE.sub(" ", text)))
    units = []
    for paragraph in re.split(r"\n\s*\n", outside):
        lines = [line.strip() for line in paragraph.strip().splitlines()]
        table = lines and all(line.startswith("|") for line in lines)
        units += lines if table else SENTENCE_END.split(" ".join(lines))
    prose = [CODE.sub(" ", unit) for unit in units]
    return [unit for unit, text in zip(units, prose, strict=True)
            if MEASUREMENT.search(text) and not any(w in text.lower() for w in EXEMPT_WORDS)]


def test_the_readme_has_results_blocks_and_each_is_closed():
    readme = (ROOT / "README.md").read_text()
    assert len(blocks()) >= 3, "the README's measured figures are in results blocks"
    for path in READMES:
        text = path.read_text()
        assert len(OPENING.findall(text)) == len(BLOCK.findall(text)), (
            f"{path.relative_to(ROOT)}: a results block without its <!-- /results -->")
    assert "estimate" in readme


@pytest.mark.parametrize("block", blocks(), ids=block_id)
def test_every_number_in_a_results_block_is_in_its_result_file(block):
    _, result_path, body = block
    result = json.loads((ROOT / result_path).read_text())
    stored = stored_numbers(result)
    numbers = printed_numbers(body)
    assert numbers, "a results block quotes figures"
    missing = [n for n in numbers if not holds(stored, n)]
    assert not missing, f"{result_path} holds none of {missing}"


@pytest.mark.parametrize("block", blocks(), ids=block_id)
def test_a_result_file_measured_the_committed_code_it_names(block):
    _, result_path, body = block
    provenance = json.loads((ROOT / result_path).read_text()).get("provenance")
    assert isinstance(provenance, dict), f"{result_path} has no provenance"
    assert set(provenance) >= PROVENANCE_KEYS
    assert provenance["dirty"] is False, "measured code that no commit holds"
    assert provenance["measures"], "a result names the code it measures"
    commit = provenance["commit"]
    assert git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0, (
        f"{result_path}: commit {commit} is not in this repository")
    stale = [path for path in provenance["measures"]
             if git("merge-base", "--is-ancestor", last_change(path), commit).returncode != 0]
    assert not stale, (
        f"{result_path} measured {commit[:10]}, but {stale} changed since: re-run "
        f"`{provenance['command']}` and commit the result")


@pytest.mark.parametrize("block", blocks(), ids=block_id)
def test_a_results_block_names_the_command_that_wrote_its_file(block):
    _, result_path, body = block
    command = json.loads((ROOT / result_path).read_text())["provenance"]["command"]
    script = next(word for word in command.split() if word.endswith((".py", ".sh")))
    assert script in body, f"the block names {script}, which wrote {result_path}"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measurement_is_quoted_outside_a_results_block(readme):
    flagged = measured_outside_blocks(readme.read_text())
    assert not flagged, "measured figures outside a results block (or say 'estimate'):\n" + (
        "\n".join(flagged))


def test_the_rules_catch_what_they_are_for():
    """The checks above, on made-up text: they can fail."""
    assert printed_numbers("11,864 requests, p50 17 ms, `make load 20`, 408.6 req/s on x86_64") \
        == ["11,864", "17", "408.6"]
    stored = stored_numbers({"requests": 11864, "rps": 408.61, "p50": 17.4, "t": "30s"})
    assert holds(stored, "11,864") and holds(stored, "408.6") and holds(stored, "30")
    assert not holds(stored, "408.7") and not holds(stored, "18")
    assert measured_outside_blocks("| gateway | 796 req/s |\n\nneeds ~125 GiB (estimate)\n") == [
        "| gateway | 796 req/s |"]
    assert measured_outside_blocks("| a | 1 MB (estimate) |\n| b | 2 MB |\n") == ["| b | 2 MB |"]
    assert measured_outside_blocks("it took\n3 s on one core. An estimate: 3 s.\n") == [
        "it took 3 s on one core."]
    inside = "<!-- results: bench/results/x.json -->\n| a | 796 req/s |\n<!-- /results -->\n"
    assert measured_outside_blocks(inside) == []
