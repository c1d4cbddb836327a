"""The gateway's dependency floors are what its tests run at: ``constraints-floor.txt`` pins
each floor ``pyproject.toml`` declares for the packages whose APIs the gateway's own code
reaches into (the KServe stub, the multipart parser); ``make test-floor`` installs them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

SERVER = Path(__file__).resolve().parents[3] / "server"
FLOORED = ("tritonclient", "python-multipart")
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?P<op>>=|==)\s*"
                         r"(?P<version>[0-9][0-9A-Za-z.]*)")


def requirements(lines: list[str], op: str) -> dict[str, str]:
    found = {}
    for line in lines:
        match = REQUIREMENT.match(line.split("#")[0].strip())
        if match and match["op"] == op:
            found[match["name"].lower()] = match["version"]
    return found


def test_the_floor_constraints_pin_exactly_the_declared_floors():
    declared = requirements(
        tomllib.loads((SERVER / "pyproject.toml").read_text())["project"]["dependencies"], ">=")
    pinned = requirements((SERVER / "constraints-floor.txt").read_text().splitlines(), "==")
    assert set(pinned) == set(FLOORED)
    for name in FLOORED:
        assert pinned[name].startswith(declared[name]), (name, declared[name], pinned[name])


def test_the_multipart_floor_has_the_module_the_gateway_imports():
    """python-multipart 0.0.15 is the first unyanked release that ships ``python_multipart``
    (earlier ones only ``multipart``); the gateway imports the new name."""
    source = (SERVER / "src/hetgateway/multipart_form.py").read_text()
    assert "from python_multipart" in source
    declared = requirements(
        tomllib.loads((SERVER / "pyproject.toml").read_text())["project"]["dependencies"], ">=")
    assert tuple(int(p) for p in declared["python-multipart"].split(".")) >= (0, 0, 15)
