"""How the docs cite measured figures, and the checks that hold each one to its own field.

A measured figure in a README or a ``docs/`` page sits in a results block: an HTML comment
(invisible when the Markdown is rendered) naming the result file and, line by line, the field
each printed figure comes from, then the text, then a closing comment::

    <!-- results: bench/results/locust-x86_64-2cpu.json
    14,729 = rows[name=Aggregated].requests
    507.2 = rows[name=Aggregated].requests_per_s
    -->
    Locust: 14,729 requests, 507.2 req/s (`bash tests/load/run_locust.sh ...`).
    <!-- /results -->

The rules, their reasons and the table shorthand are in ``docs/figures.md``; this module
parses blocks (``blocks``), reads the numbers a reader sees (``printed_figures``), resolves
fields (``resolve``), compares at the printed rounding (``holds``) and finds stale results
(``stale_paths``). ``tests/unit/docs/test_readme_figures.py`` runs the checks. For writers::

    .venv/bin/python bench/figures.py check [DOC ...]   # every figure: printed, field, stored
    .venv/bin/python bench/figures.py suggest DOC       # fields that hold each printed figure
    .venv/bin/python bench/figures.py stale             # cited results to re-run, and how
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from provenance import REPO_ROOT, command_entries, make_recipes, measured_paths

BLOCK = re.compile(
    r"^<!-- results: (?P<file>\S+)(?P<flags>[ \t\w-]*)\n(?P<mapping>.*?)^-->[ \t]*\n"
    r"(?P<body>.*?)^<!-- /results -->[ \t]*$", re.DOTALL | re.MULTILINE)
"""A results block: the opening comment (file, flags, then the mapping, ``-->`` on a line of
its own), the text, the closing comment on a line of its own."""
OPENING = re.compile(r"^<!-- results: ", re.MULTILINE)
CLOSING = re.compile(r"^<!-- /results -->", re.MULTILINE)
FLAGS = frozenset({"stale", "no-provenance"})
STALE_NOTE = "re-run pending"
"""What a block flagged ``stale`` tells its reader (and the test looks for)."""
NO_PROVENANCE_NOTE = re.compile(r"\brecords?\s+no\s+commit\b")
"""What a block flagged ``no-provenance`` tells its reader (and the test looks for): that the
file "records no commit" (or the files "record no commit")."""
PROVENANCE_KEYS = frozenset({"command", "commit", "dirty", "measures", "date", "machine"})
NUMBER = re.compile(
    r"(?<![\w.,^])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?!\d|[.,]\d)")
"""A number as prose prints it: ``17``, ``408.6``, ``11,864``, ``6e-8``; a unit may follow
(``4x``, ``30s``); not the 50 of ``p50``, the 64 of ``x86_64`` nor the 16 of ``fp16``."""
SIGNS = "-+\u2212"
NAME_CHARS = re.compile(r"[\w)\]]")
"""A character before a sign that makes it a hyphen: ``top-1``, ``ResNet-50``."""
CITATION = re.compile(r"^(?P<printed>\S+)\s*=\s*(?P<field>\S.*)$")
ROWS = re.compile(r"^rows\s+(?P<prefix>\S*):\s*(?P<keys>.*)$")
COLS = re.compile(r"^cols\s+(?P<templates>.*)$")
SCALE = re.compile(r"\s*(?P<op>[*/])\s*(?P<factor>\d+(?:\.\d+)?(?:e[-+]?\d+)?)$")
FUNCTION = re.compile(r"^(?P<name>len|abs)\((?P<inner>.*)\)$")
STEP = re.compile(r'\.?(?P<key>[^.\[\]]+)|\["(?P<quoted>[^"]*)"\]|\[(?P<selector>[^\]]*)\]')
MEASUREMENT = re.compile(
    r"\d(?:\.\d+)?\s*(?:ms|s|min|minutes|h|req/s|img/s|requests/s|kB|MB|MiB|GB|GiB)\b")
EXEMPT_WORDS = ("estimate", "target", "timeout", "limit", "default", "up to", "capped",
                "constant", "published")
"""Outside a block, a figure with a unit is a setting, a goal, arithmetic or a paper's
figure only when its sentence says so with one of these."""
CODE = re.compile(r"`[^`]*`")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
SENTENCE_END = re.compile(r"(?<=[.;!?])\s+(?=[A-Z(`*])")
MARKDOWN = MarkdownIt("commonmark").enable("table")


class CitationError(ValueError):
    """A mapping that cannot be read, or a field that is not in its file."""


@dataclass(frozen=True)
class Figure:
    """A number as the reader sees it, and where."""

    text: str
    line: int

    @property
    def value(self) -> float:
        return float(self.text.replace(",", "").replace("\u2212", "-"))

    @property
    def half_step(self) -> float:
        """Half the unit of the last printed digit: ``408.6`` stands for [408.55, 408.65]."""
        mantissa, _, exponent = self.text.replace(",", "").lower().partition("e")
        decimals = len(mantissa.partition(".")[2])
        return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


@dataclass(frozen=True)
class Citation:
    """One entry of a block's mapping: the field a figure comes from (``printed`` when the
    mapping line says which figure it expects)."""

    field: str
    printed: str | None = None


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    file: str
    flags: frozenset[str]
    citations: tuple[Citation, ...]
    body: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO_ROOT)}:{self.line}:{self.file}"

    def figures(self) -> list[Figure]:
        return [Figure(f.text, f.line + self.line) for f in printed_figures(self.body)]


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """Every page that may quote figures: each README.md and each Markdown page under docs/
    (committed or not, unless ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
         "README.md", "*/README.md", "docs/*.md"],
        cwd=root, capture_output=True, text=True, check=True).stdout.split()
    return sorted({root / path for path in listed if (root / path).is_file()})


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    found = []
    for match in BLOCK.finditer(text):
        flags = frozenset(match["flags"].split())
        if not flags <= FLAGS:
            raise CitationError(f"{document.name}: unknown flags {sorted(flags - FLAGS)}")
        line = text.count("\n", 0, match.start("body")) + 1
        found.append(Block(document, line, match["file"], flags,
                           tuple(parse_mapping(match["mapping"])), match["body"]))
    return found


def unclosed(document: Path) -> int:
    """Openings without a mapping-and-closing a block needs (0 when every block is whole)."""
    text = document.read_text()
    return len(OPENING.findall(text)) - len(list(BLOCK.finditer(text)))


def parse_mapping(mapping: str) -> Iterator[Citation]:
    """The citations of a mapping, in order: ``PRINTED = FIELD`` lines, and ``rows``/``cols``
    pairs that stand for one citation per row and template (row after row)."""
    rows: tuple[str, list[str]] | None = None
    for line in _logical_lines(mapping):
        if match := ROWS.match(line):
            keys = [key.strip() for key in match["keys"].split(";") if key.strip()]
            rows = (match["prefix"], keys)
        elif match := COLS.match(line):
            if rows is None:
                raise CitationError(f"'cols' without 'rows' before it: {line!r}")
            prefix, keys = rows
            templates = match["templates"].split()
            for key in keys:
                for template in templates:
                    yield Citation(_expand(template, prefix, key))
            rows = None
        elif match := CITATION.match(line):
            yield Citation(match["field"].strip(), match["printed"])
        else:
            raise CitationError(f"not a citation: {line!r} (PRINTED = FIELD, rows, cols)")
    if rows is not None:
        raise CitationError("'rows' without its 'cols' line")


def _logical_lines(mapping: str) -> Iterator[str]:
    """Mapping lines; a line starting with white space continues the one before; ``#``
    starts a note."""
    current = ""
    for raw in mapping.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and current:
            current += " " + raw.strip()
            continue
        if current:
            yield current
        current = raw.strip()
    if current:
        yield current


def _expand(template: str, prefix: str, key: str) -> str:
    """A citation's field from a ``cols`` template: ``.`` the row itself, ``.x`` under the
    row, ``{}`` the key put into the template, anything else as it is."""
    if template == ".":
        return prefix.replace("{}", key)
    if "{}" in template:
        return template.replace("{}", key)
    if template.startswith("."):
        return prefix.replace("{}", key) + template
    return template


def printed_figures(markdown: str) -> list[Figure]:
    """The numbers a reader sees in ``markdown``, in reading order: prose, lists and table
    bodies; not code, HTML comments, link targets, images or table header rows."""
    figures = []
    header = False
    for token in MARKDOWN.parse(markdown):
        header = {"thead_open": True, "thead_close": False}.get(token.type, header)
        if token.type != "inline" or header:
            continue
        line = token.map[0] if token.map else 0
        figures += [Figure(text, line) for text in numbers_in(_visible_text(token))]
    return figures


def _visible_text(inline) -> str:
    parts = []
    for child in inline.children or []:
        if child.type == "text":
            parts.append(child.content)
        elif child.type in {"softbreak", "hardbreak", "code_inline", "html_inline", "image"}:
            parts.append(" ")
    return "".join(parts)


def numbers_in(text: str) -> list[str]:
    """The numbers in plain ``text``, each with its sign when it has one (``-0.68`` in
    ``[-1.07, -0.68]``); a number hyphenated to a name (``top-1``) is part of the name."""
    found = []
    for match in NUMBER.finditer(text):
        start = match.start()
        before = text[start - 1] if start else ""
        if before in SIGNS:
            ahead = text[start - 2] if start > 1 else ""
            if NAME_CHARS.match(ahead or " ") and not ahead.isdigit():
                continue
            if not ahead.isdigit():
                found.append(before.replace("\u2212", "-") + match.group())
                continue
        found.append(match.group())
    return found


@dataclass(frozen=True)
class Field:
    """A citation's field: ``[-][len(|abs(][FILE:]PATH[)][*N|/N]``."""

    file: str | None
    path: str
    negate: bool = False
    function: str | None = None
    scale: float = 1.0


def parse_field(field: str) -> Field:
    expression = field.strip()
    negate = expression.startswith("-")
    expression = expression.removeprefix("-").strip()
    scale = 1.0
    if match := SCALE.search(expression):
        factor = float(match["factor"])
        scale = factor if match["op"] == "*" else 1.0 / factor
        expression = expression[:match.start()]
    function = None
    if match := FUNCTION.match(expression):  # len(FILE:PATH)
        function, expression = match["name"], match["inner"].strip()
    file, _, path = expression.rpartition(".json:")
    if function is None and (match := FUNCTION.match(path)):  # FILE:len(PATH)
        function, path = match["name"], match["inner"].strip()
    return Field(f"{file}.json" if file else None, path, negate, function, scale)


def cited_files(block: Block) -> list[str]:
    """The result files a block cites: its own and any a citation names (``FILE:PATH``)."""
    named = (parse_field(citation.field).file for citation in block.citations)
    return sorted({block.file, *(file for file in named if file)})


def resolve(field: str, default_file: str, root: Path = REPO_ROOT) -> object:
    """The value ``field`` names: ``[-][len(|abs(][FILE:]PATH[)][*N|/N]``; PATH steps are
    ``key``, ``[3]``, ``["key.with.dots"]`` and ``[key=value,...]`` (the one list item whose
    keys have those values); FILE defaults to the block's."""
    parsed = parse_field(field)
    value = _walk(_load(root / (parsed.file or default_file)), parsed.path, field)
    if parsed.function == "len":
        value = len(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CitationError(f"{field}: not a number or a string but {type(value).__name__}")
    if isinstance(value, str):
        if parsed.negate or parsed.scale != 1.0 or parsed.function == "abs":
            raise CitationError(f"{field}: a string field cannot be scaled or negated")
        return value
    value = abs(value) if parsed.function == "abs" else value
    return (-value if parsed.negate else value) * parsed.scale


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CitationError(f"cannot read {path.relative_to(REPO_ROOT)}: {error}") from error


def _walk(value: object, path: str, field: str) -> object:
    position = 0
    while position < len(path):
        match = STEP.match(path, position)
        if not match or match.end() == position:
            raise CitationError(f"{field}: cannot read the path at {path[position:]!r}")
        position = match.end()
        if match["key"] is not None or match["quoted"] is not None:
            key = match["key"] if match["key"] is not None else match["quoted"]
            if not isinstance(value, dict) or key not in value:
                raise CitationError(f"{field}: no key {key!r} there")
            value = value[key]
        else:
            value = _select(value, match["selector"].strip(), field)
    return value


def _select(value: object, selector: str, field: str) -> object:
    """``[3]``: a list's item, or a string's word (``provenance.command[5]``: ``20``);
    ``[key=value,...]``: the one list item with those values."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", selector):
        value = value.split()
    if not isinstance(value, list):
        raise CitationError(f"{field}: [{selector}] on something that is not a list")
    if re.fullmatch(r"-?\d+", selector):
        try:
            return value[int(selector)]
        except IndexError as error:
            raise CitationError(f"{field}: no item [{selector}]") from error
    wanted = [part.partition("=")[::2] for part in selector.split(",")]
    chosen = [item for item in value if isinstance(item, dict)
              and all(k.strip() in item and _same(item[k.strip()], v.strip()) for k, v in wanted)]
    if len(chosen) != 1:
        raise CitationError(f"{field}: [{selector}] selects {len(chosen)} items, not one")
    return chosen[0]


def _same(stored: object, written: str) -> bool:
    if isinstance(stored, bool):
        return written.lower() == str(stored).lower()
    if isinstance(stored, int | float):
        try:
            return float(written) == float(stored)
        except ValueError:
            return False
    return str(stored) == written


def holds(value: object, figure: Figure) -> bool:
    """Whether ``value`` is what ``figure`` prints, at the rounding it is printed with (a
    string holds it when it is that one number, a unit after it allowed: ``"30s"``; pick a
    word of a longer string with ``[N]``)."""
    if isinstance(value, str):
        found = numbers_in(value)
        return len(found) == 1 and holds(Figure(found[0], 0).value, figure)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return abs(value - figure.value) <= figure.half_step * (1 + 1e-9) + 1e-12


@dataclass(frozen=True)
class Check:
    """One figure of a block against its citation."""

    figure: Figure | None
    citation: Citation | None
    stored: object
    problem: str | None


def check_block(block: Block, root: Path = REPO_ROOT) -> list[Check]:
    """Each printed figure of ``block`` against the citation in the same place of its
    mapping: same count, the printed text the mapping line expects, a stored value that
    rounds to it."""
    figures, citations = block.figures(), list(block.citations)
    checks = []
    for index in range(max(len(figures), len(citations))):
        figure = figures[index] if index < len(figures) else None
        citation = citations[index] if index < len(citations) else None
        stored, problem = None, None
        if figure is None:
            problem = "a citation without a printed figure (the mapping has too many entries)"
        elif citation is None:
            problem = "a printed figure without a citation (add it to the mapping)"
        elif citation.printed is not None and citation.printed != figure.text:
            problem = f"the mapping expects {citation.printed} here"
        else:
            try:
                stored = resolve(citation.field, block.file, root)
                if not holds(stored, figure):
                    problem = f"the field holds {stored!r}"
            except CitationError as error:
                problem = str(error)
        checks.append(Check(figure, citation, stored, problem))
    return checks


def provenance_of(file: str, root: Path = REPO_ROOT, *,
                  section: str | None = None) -> dict | None:
    """The ``provenance`` object of a result file, or None when it has none; with
    ``section``, that top-level section's own provenance when it carries one (a benchmark
    that re-measures one section of its file keeps each section's own run)."""
    return _provenance_in(_load(root / file), section)


def _provenance_in(content: object, section: str | None) -> dict | None:
    if not isinstance(content, dict):
        return None
    part = content.get(section) if section is not None else None
    found = part.get("provenance") if isinstance(part, dict) else None
    found = found if isinstance(found, dict) else content.get("provenance")
    return found if isinstance(found, dict) else None


def cited_runs(block: Block, root: Path = REPO_ROOT) -> dict[str, dict | None]:
    """The runs a block's figures come from: ``FILE`` (or ``FILE:SECTION`` where the cited
    section carries a provenance of its own) -> that provenance (None: the file has none)."""
    contents = {file: _load(root / file) for file in cited_files(block)}
    whole = {file: _provenance_in(content, None) for file, content in contents.items()}
    runs: dict[str, dict | None] = {}
    for citation in block.citations:
        field = parse_field(citation.field)
        file = field.file or block.file
        step = STEP.match(field.path)
        section = (step["key"] or step["quoted"]) if step else None
        own = _provenance_in(contents[file], section)
        runs[f"{file}:{section}" if own != whole[file] else file] = own
    for file in contents:  # a cited file none of whose figures the mapping reaches yet
        if not any(name == file or name.startswith(f"{file}:") for name in runs):
            runs[file] = whole[file]
    return runs


def stale_paths(provenance: dict, root: Path = REPO_ROOT) -> list[str]:
    """The paths a result depends on (its ``measures`` and the code its command runs,
    derived now) whose content differs from the commit it measured (deleted, moved, edited,
    committed or not)."""
    paths = measured_paths(provenance["command"], provenance["measures"], root=root)
    diff = subprocess.run(["git", "diff", "--name-only", provenance["commit"], "--", *paths],
                          cwd=root, capture_output=True, text=True, check=True)
    return diff.stdout.split()


def command_scripts(provenance: dict, root: Path = REPO_ROOT) -> list[str]:
    """The repository files the command of ``provenance`` starts (``bench/soak.py``)."""
    return [str(entry.relative_to(root)) for entry in command_entries(provenance["command"],
                                                                      root=root)]


def names_command(text: str, provenance: dict, root: Path = REPO_ROOT) -> bool:
    """Whether ``text`` names the script that wrote a result, by its path, its file name or
    a ``make`` target whose recipe runs it (``make bench-gateway``)."""
    scripts = command_scripts(provenance, root)
    recipes = make_recipes(root)
    named = [recipes.get(target, "") for target in re.findall(r"\bmake ([\w-]+)", text)]
    return any(script in text or Path(script).name in text
               or any(Path(script).name in recipe for recipe in named) for script in scripts)


def visible_text(markdown: str) -> str:
    """``markdown`` without comments and code: what a reader reads as prose."""
    return CODE.sub(" ", COMMENT.sub(" ", markdown))


def measured_outside_blocks(text: str) -> list[str]:
    """Table rows and sentences outside results blocks that quote a speed, time or memory
    figure without saying it is an estimate, a setting, a goal or a published figure (as a
    reader sees them: code, comments and code blocks are not prose)."""
    units: list[str] = []
    row: list[str] | None = None
    for token in MARKDOWN.parse(BLOCK.sub("\n\n", text)):
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            units.append("| " + " | ".join(row) + " |")
            row = None
        elif token.type == "inline":
            visible = " ".join(_visible_text(token).split())
            if row is not None:
                row.append(visible)
            else:
                units += SENTENCE_END.split(visible)
    return [unit for unit in units if MEASUREMENT.search(unit)
            and not any(word in unit.lower() for word in EXEMPT_WORDS)]


def suggestions(block: Block, root: Path = REPO_ROOT) -> Iterator[str]:
    """For each printed figure of ``block``, a mapping line with the first field of its file
    that holds it (as printed, or x100 for a percentage) and the others as notes."""
    content = _load(root / block.file)
    leaves = list(_leaves(content, ""))
    for figure in block.figures():
        fields = [f"{path}{suffix}" for path, value in leaves for suffix, factor in
                  (("", 1.0), ("*100", 100.0), ("/60", 1 / 60))
                  if isinstance(value, int | float) and not isinstance(value, bool)
                  and holds(value * factor, figure)]
        fields += [f"{path}[{index}]" for path, value in leaves if isinstance(value, str)
                   for index, word in enumerate(value.split()) if holds(word, figure)]
        first = fields[0] if fields else "?"
        others = f"   # or: {', '.join(fields[1:6])}" if len(fields) > 1 else ""
        yield f"{figure.text} = {first}{others}"


def _leaves(value: object, path: str) -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            step = f".{key}" if re.fullmatch(r"[^.\[\]]+", key) else f'["{key}"]'
            yield from _leaves(item, f"{path}{step}" if path else step.lstrip("."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def stale_results(pages: Sequence[Path], root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """Every result file the pages cite (and the screenshot's provenance) that is stale: file
    -> the paths that changed since it was measured."""
    runs = {name: run for page in pages for block in blocks(page)
            for name, run in cited_runs(block, root).items()}
    for path in (root / "docs" / "img").glob("*.json"):
        file = str(path.relative_to(root))
        runs[file] = provenance_of(file, root)
    found = {}
    for name, provenance in sorted(runs.items()):
        if provenance and (paths := stale_paths(provenance, root)):
            found[name] = paths
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "suggest", "stale"])
    parser.add_argument("documents", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if args.action == "stale":
        for file, paths in stale_results([d.resolve() for d in args.documents] or documents()
                                         ).items():
            file_name, _, section = file.partition(":")
            command = provenance_of(file_name, section=section or None)["command"]
            print(f"{file}: re-run `{command}` ({len(paths)} paths "
                  f"changed: {', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''})")
        return 0
    failed = False
    for document in [d.resolve() for d in args.documents] or documents():
        for block in blocks(document):
            print(f"== {block.name}")
            if args.action == "suggest":
                print("\n".join(suggestions(block)))
                continue
            for check in check_block(block):
                failed |= check.problem is not None
                printed = check.figure.text if check.figure else "-"
                field = check.citation.field if check.citation else "-"
                print(f"{printed:>12}  {field:60} {check.problem or 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
