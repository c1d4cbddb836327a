"""The docs' figures cannot drift from what was measured (the rules: ``docs/figures.md``).

Every measured figure in a README or a ``docs/`` page sits in a results block whose opening
comment names the result file and, in reading order, the field each printed figure comes
from (``bench/figures.py`` parses them; ``bench/provenance.py`` writes the files):

* each number a reader sees in the block is the field cited at its place, at the rounding it
  is printed with (``408.6`` stands for [408.55, 408.65]): a perturbed figure fails;
* the file's ``provenance`` names a clean tree and a commit in this repository, and the block
  names the command that wrote it; a file without provenance (the studies' reports) is cited
  only in a block flagged ``no-provenance`` that tells the reader so;
* a result is stale when any path it depends on differs from the commit it measured: its
  declared ``measures`` and the code its command runs, derived from the command (imports
  followed through the repository, modules started with ``-m``, scripts it names); a stale
  result is cited only in a block flagged ``stale`` that says a re-run is pending, and the
  flag goes once the result is fresh;
* outside blocks, no measurement: a table row or sentence with a speed, time or memory figure
  must say it is an estimate, a setting, a goal or a published figure;
* the web page screenshot the README shows is not older than the page and models it shows;
* links between the pages reach files and headings that exist.

(The answers the docs show, the README's curl answer and the client README's CLI output, are
run against the live gateway by ``tests/e2e/test_docs_answers.py``.)
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"


def _load_figures():
    spec = importlib.util.spec_from_file_location("hetserve_figures", BENCH / "figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH))  # its sibling provenance.py, as when run as a script
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


figures = _load_figures()
DOCUMENTS = figures.documents()
BLOCKS = [block for document in DOCUMENTS for block in figures.blocks(document)]
SCREENSHOT = ROOT / "docs" / "img" / "web_page.png"
SCREENSHOT_PROVENANCE = SCREENSHOT.with_suffix(".json")


def document_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def block_id(block) -> str:
    return block.name


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_the_readme_and_the_docs_pages_are_checked():
    checked = {document_id(path) for path in DOCUMENTS}
    assert {"README.md", "server/README.md", "export/README.md", "deploy/README.md",
            "docs/figures.md"} <= checked
    cited = {document_id(block.document) for block in BLOCKS}
    assert {"README.md", "docs/measurements.md", "docs/studies.md"} <= cited


@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_every_results_block_is_whole(document):
    text = document.read_text()
    assert figures.unclosed(document) == 0, (
        "a '<!-- results: FILE' opening without its mapping, '-->' line and "
        "'<!-- /results -->' (docs/figures.md)")
    assert len(figures.CLOSING.findall(text)) == len(figures.blocks(document))


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_every_printed_figure_is_the_field_cited_for_it(block):
    assert (ROOT / block.file).is_file(), f"no result file {block.file}"
    checks = figures.check_block(block)
    assert checks, "a results block quotes figures"
    wrong = [check for check in checks if check.problem]
    assert not wrong, "\n".join(
        f"line {c.figure.line if c.figure else '-'}: {c.figure.text if c.figure else '-'} "
        f"<- {c.citation.field if c.citation else '-'}: {c.problem}" for c in wrong)


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_a_result_file_carries_its_provenance_or_the_block_says_it_does_not(block):
    runs = figures.cited_runs(block)
    missing = [name for name, provenance in runs.items() if not provenance]
    if not missing:
        assert "no-provenance" not in block.flags, "every file cited has a provenance now: drop "\
            "the 'no-provenance' flag"
    else:
        assert "no-provenance" in block.flags, f"{missing} have no provenance: flag the block"
        assert figures.NO_PROVENANCE_NOTE.search(figures.visible_text(block.body)), (
            "a reader is told that such a file 'records no commit'")
    for file, provenance in runs.items():
        if not provenance:
            continue
        assert set(provenance) >= figures.PROVENANCE_KEYS, file
        assert provenance["dirty"] is False, f"{file} measured code that no commit holds"
        assert git("cat-file", "-e", f"{provenance['commit']}^{{commit}}").returncode == 0, (
            f"{file}: commit {provenance['commit']} is not in this repository")


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_a_result_older_than_the_code_it_measures_is_flagged_stale(block):
    stale = {}
    for file, provenance in figures.cited_runs(block).items():
        if provenance and (paths := figures.stale_paths(provenance)):
            stale[file] = f"measured {provenance['commit'][:10]}, {paths} changed since: " \
                          f"re-run `{provenance['command']}` and commit the result"
    if "stale" in block.flags:
        assert stale, "every file cited measured the current code: drop the 'stale' flag"
        assert figures.STALE_NOTE in figures.visible_text(block.body), (
            f"a stale block tells the reader '{figures.STALE_NOTE}'")
    else:
        assert not stale, "\n".join(f"{file} {why}" for file, why in stale.items()) + (
            f"\n(or flag the block 'stale' and say '{figures.STALE_NOTE}')")


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_a_results_block_names_the_command_that_wrote_each_file(block):
    for file in figures.cited_files(block):
        provenance = figures.provenance_of(file)
        if provenance is None:
            continue
        assert figures.command_scripts(provenance), (
            f"{file}: its command names no repository script: {provenance['command']}")
        assert figures.names_command(block.body, provenance), (
            f"the block names {figures.command_scripts(provenance)[0]} (or a make target "
            f"running it), which wrote {file}")


@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_no_measurement_is_quoted_outside_a_results_block(document):
    flagged = figures.measured_outside_blocks(document.read_text())
    assert not flagged, (
        "measured figures outside a results block (or say 'estimate', 'target', "
        "'published', ...):\n" + "\n".join(flagged))


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_a_perturbed_figure_fails(block):
    """Every figure of the docs, changed by one unit of its last digit, by 1 % or by 50 %
    either way, or with its sign flipped, no longer holds its cited field."""
    passing = []
    for figure, citation in zip(block.figures(), block.citations, strict=False):
        stored = figures.resolve(citation.field, block.file)
        for text in perturbed(figure):
            if figures.holds(stored, figures.Figure(text, figure.line)):
                passing.append(f"{figure.text} -> {text} ({citation.field} = {stored!r})")
    assert not passing, "perturbed figures that still pass:\n" + "\n".join(passing)


def perturbed(figure) -> set[str]:
    """``figure`` changed by one unit of its last digit, +-1 %, +-50 %, and negated, printed
    as it is printed; changes that print the same text are left out."""
    unit = 2 * figure.half_step
    values = [figure.value + unit, figure.value - unit, figure.value * 1.01,
              figure.value * 0.99, figure.value * 1.5, figure.value * 0.5, -figure.value]
    texts = {reprint(value, figure.text) for value in values}
    return {text for text in texts if figures.Figure(text, 0).value != figure.value}


def reprint(value: float, like: str) -> str:
    """``value`` printed the way ``like`` is (decimals, exponent, thousands, sign)."""
    plain = like.replace(",", "").lstrip("+-\u2212")
    mantissa, _, exponent = plain.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    if exponent:
        text = f"{value:.{decimals}e}"
        head, _, power = text.partition("e")
        text = f"{head}e{int(power)}"
    else:
        text = f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"
    if like[0] == "+" and value >= 0:
        text = "+" + text
    return text


def test_the_rules_catch_what_they_are_for(tmp_path):
    """The checks, on made-up pages and files: they can fail."""
    assert figures.numbers_in(
        "top-1 +0.34, NLL -0.016 [-1.07, -0.30], 14,729 requests, p50 11 ms on x86_64, "
        "batches of 1-32, 4x, 6e-8, ResNet-50, fp16") == [
        "+0.34", "-0.016", "-1.07", "-0.30", "14,729", "11", "1", "32", "4", "6e-8"]
    page = ("Locust: **14,729** requests, 507.2 req/s (`make load 20`) <!-- 99 -->\n\n"
            "| batch (of 32) | img/s |\n|---|---|\n| 1 | 3810 |\n")
    assert [f.text for f in figures.printed_figures(page)] == ["14,729", "507.2", "1", "3810"]
    result = {"rows": [{"name": "a", "requests": 14729, "rps": 507.23, "p50_ms": 17.4},
                       {"name": "Aggregated", "requests": 3, "rps": 1.0, "p50_ms": 2.0}],
              "top1": 0.8155, "gain": -0.00343, "provenance": {"command": "x run 20 30s"}}
    (tmp_path / "r.json").write_text(json.dumps(result))
    value = figures.resolve
    assert value("rows[name=a].rps", "r.json", tmp_path) == 507.23
    assert value("rows[1].requests", "r.json", tmp_path) == 3
    assert value("top1 * 100", "r.json", tmp_path) == pytest.approx(81.55)
    assert value("-gain*100", "r.json", tmp_path) == pytest.approx(0.343)
    assert value("len(rows)", "r.json", tmp_path) == 2
    assert value("provenance.command[3]", "r.json", tmp_path) == "30s"
    for broken in ("rows[name=b].rps", "rows[7].rps", "rows.rps", "missing", "rows"):
        with pytest.raises(figures.CitationError):
            value(broken, "r.json", tmp_path)

    def printed(text):
        return figures.Figure(text, 0)

    assert figures.holds(507.23, printed("507.2")) and not figures.holds(507.23, printed("507.3"))
    assert figures.holds(14729, printed("14,729")) and not figures.holds(14729, printed("14,730"))
    assert figures.holds(-0.0163, printed("-0.016"))
    assert not figures.holds(0.0163, printed("-0.016"))
    assert figures.holds(6.2e-8, printed("6e-8")) and not figures.holds(7.6e-8, printed("6e-8"))
    assert figures.holds("30s", printed("30")) and not figures.holds("x run 20 30s", printed("30"))

    page = tmp_path / "page.md"
    page.write_text("<!-- results: r.json\n14,729 = rows[name=a].requests\nrows rows[{}]: 0; 1\n"
                    "cols .rps .p50_ms\n-->\n14,729 requests; 507.2 at 17 ms, 1.0 at 2 ms.\n"
                    "<!-- /results -->\n")
    (block,) = figures.blocks(page)
    assert [c.field for c in block.citations] == [
        "rows[name=a].requests", "rows[0].rps", "rows[0].p50_ms", "rows[1].rps",
        "rows[1].p50_ms"]
    assert [c.problem for c in figures.check_block(block, tmp_path)] == [None] * 5
    for wrong, problem in (("507.2 at 17", "507.2 at 18"), ("14,729 req", "14,728 req"),
                           ("1.0 at 2 ms", "1.0 at 2 ms, 5 s")):
        page.write_text(page.read_text().replace(wrong, problem))
        (block,) = figures.blocks(page)
        assert any(c.problem for c in figures.check_block(block, tmp_path)), problem
        page.write_text(page.read_text().replace(problem, wrong))
    page.write_text("<!-- results: r.json -->\n14,729\n<!-- /results -->\n")
    assert figures.unclosed(page) == 1 and figures.blocks(page) == []

    assert figures.measured_outside_blocks("| gateway | 796 req/s |\n\nneeds ~125 GiB (estimate)\n"
                                           ) == ["| gateway | 796 req/s |"]
    assert figures.measured_outside_blocks("it took\n3 s on one core. An estimate: 3 s.\n") == [
        "it took 3 s on one core."]
    assert figures.measured_outside_blocks("Run `sleep 3 s` and see:\n\n    took 3 s\n") == []
    assert figures.measured_outside_blocks("The paper's published figure: 1.28 ms.\n") == []
    inside = "<!-- results: x.json\n1 = a\n-->\n| a | 796 req/s |\n<!-- /results -->\n"
    assert figures.measured_outside_blocks(inside) == []


def test_a_result_is_stale_once_the_code_its_command_runs_changes(tmp_path):
    """Staleness is derived: the script's imports, followed through the repository, count
    without being listed; a change to any of them after the measured commit is found."""
    repo = tmp_path
    (repo / "bench").mkdir()
    (repo / "lib" / "src" / "mylib").mkdir(parents=True)
    (repo / "lib" / "src" / "mylib" / "__init__.py").write_text("")
    (repo / "lib" / "src" / "mylib" / "speed.py").write_text("from . import tools\n")
    (repo / "lib" / "src" / "mylib" / "tools.py").write_text("X = 1\n")
    (repo / "lib" / "src" / "mylib" / "server.py").write_text("Y = 1\n")
    (repo / "lib" / "src" / "mylib" / "unused.py").write_text("Z = 1\n")
    (repo / "bench" / "helper.py").write_text("SERVER = ['-m', 'mylib.server']\n")
    (repo / "bench" / "run.py").write_text("import helper\nfrom mylib import speed\n")
    (repo / "model").mkdir()
    (repo / "model" / "weights.bin").write_text("w")
    for command in (["init", "-q"], ["add", "."],
                    ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "code"]):
        assert git(*command, cwd=repo).returncode == 0
    commit = git("rev-parse", "HEAD", cwd=repo).stdout.strip()
    provenance = {"command": ".venv/bin/python bench/run.py", "commit": commit,
                  "measures": ["model"]}
    assert figures.measured_paths(provenance["command"], ["model"], root=repo) == [
        "bench/helper.py", "bench/run.py", "lib/src/mylib/__init__.py",
        "lib/src/mylib/server.py", "lib/src/mylib/speed.py", "lib/src/mylib/tools.py", "model"]
    assert figures.stale_paths(provenance, repo) == []
    (repo / "lib" / "src" / "mylib" / "unused.py").write_text("Z = 2\n")
    assert figures.stale_paths(provenance, repo) == []
    for changed in ("lib/src/mylib/tools.py", "lib/src/mylib/server.py", "model/weights.bin"):
        (repo / changed).write_text((repo / changed).read_text() + "\n")
        assert figures.stale_paths(provenance, repo) == [changed]
        assert git("checkout", "--", changed, cwd=repo).returncode == 0
    (repo / "lib" / "src" / "mylib" / "tools.py").rename(repo / "lib" / "src" / "mylib" / "t.py")
    (repo / "lib" / "src" / "mylib" / "speed.py").write_text("from . import t\n")
    assert figures.stale_paths(provenance, repo) == ["lib/src/mylib/speed.py"]


def test_a_section_measured_by_a_run_of_its_own_is_judged_by_that_run(tmp_path):
    """A benchmark that re-measures one section of its file keeps each section's own
    provenance: a block citing the other section is judged by the older run."""
    old = {"command": "python bench/x.py", "commit": "a" * 40}
    new = {"command": "python bench/x.py", "commit": "b" * 40}
    (tmp_path / "r.json").write_text(json.dumps({
        "provenance": new, "cost": {"ratio": 1.2, "provenance": new},
        "error": {"p99": 0.007, "provenance": old}, "images": 400}))
    page = tmp_path / "page.md"
    page.write_text("<!-- results: r.json\n1.2 = cost.ratio\n0.007 = error.p99\n"
                    "400 = images\n-->\nratio 1.2, error 0.007 over 400 images\n"
                    "<!-- /results -->\n")
    [block] = figures.blocks(page)
    assert figures.cited_runs(block, tmp_path) == {"r.json": new, "r.json:error": old}


def test_the_code_a_benchmark_runs_is_derived_from_its_command():
    gateway = figures.measured_paths(".venv/bin/python bench/gateway_bench.py")
    assert {"bench/gateway_bench.py", "bench/loopback_target.py",  # imported
            "server/src/hetgateway/cli.py",  # started as python -m hetgateway.cli
            "server/src/hetgateway/embedded/ort_model.py",  # copied into Triton's repository
            "contract/src/hetcontract/api.py"} <= set(gateway)
    assert "bench/provenance.py" not in gateway
    locust = figures.measured_paths("bash tests/load/run_locust.sh http://127.0.0.1:8080 20 30s")
    assert {"tests/load/run_locust.sh", "tests/load/locustfile.py",
            "tests/load/locust_summary.py"} <= set(locust)
    assert "export/src/hetexport/cli.py" in figures.measured_paths(".venv/bin/hetexport demo")


def heading_anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (``#the-two-commands``)."""
    anchors: set[str] = set()
    tokens = figures.MARKDOWN.parse(document.read_text())
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children or []).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        anchor, count = slug, 1
        while anchor in anchors:
            anchor, count = f"{slug}-{count}", count + 1
        anchors.add(anchor)
    return anchors


def relative_links(document: Path) -> list[str]:
    """The targets of a page's links and images that point into the repository."""
    found = []
    for token in figures.MARKDOWN.parse(document.read_text()):
        for child in token.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if isinstance(target, str) and not re.match(r"^[a-z]+:", target):
                found.append(target)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=document_id)
def test_links_between_the_pages_reach_files_and_headings_that_exist(document):
    broken = []
    for target in relative_links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_web_page_screenshot_shows_the_current_page():
    """``make docs-screenshot`` writes docs/img/web_page.png from the live page and its
    provenance beside it; a change to the page, the API contract or the shipped models since
    makes it stale."""
    assert "docs/img/web_page.png" in (ROOT / "README.md").read_text()
    provenance = json.loads(SCREENSHOT_PROVENANCE.read_text())["provenance"]
    assert provenance["dirty"] is False
    stale = figures.stale_paths(provenance)
    assert not stale, f"the screenshot predates changes to {stale}: run `make docs-screenshot`"
