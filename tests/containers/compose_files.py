"""docker-compose.yml and its overrides, merged the way Docker Compose merges them, and each
service turned into the ``podman run`` command that runs it where no Docker engine is.

Typical usage::

    config = load_compose([ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml"], env={})
    config["services"]["triton"]["image"]           # hetserve/triton-cpu:0.1.0

Merge rules (the Compose specification's, for what hetserve's files use): mappings merge key
by key; ``!reset`` removes a key and ``!override`` replaces a value whole; ``command``,
``entrypoint`` and ``healthcheck.test`` are replaced; a service's ``volumes`` merge by their
target path; ``ports``, ``expose``, ``tmpfs`` and ``networks`` (as lists) are joined without
repeats; any other list in an override is an error, so a file this module cannot merge the
way Compose does is refused. ``${VAR:-default}`` takes ``env``'s value when set and not
empty, else the default; ``${VAR}`` is ``env``'s value or empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPLACED_LISTS = frozenset({"command", "entrypoint", "test"})
JOINED_LISTS = frozenset({"ports", "expose", "tmpfs", "networks", "profiles"})
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}")


class ComposeError(ValueError):
    """A compose file uses something the merge or the podman translation does not support."""


@dataclass(frozen=True)
class Override:
    """``!override value``: replaces the value from the earlier files whole."""

    value: Any


class Reset:
    """``!reset``: removes the key the earlier files set."""


class _Loader(yaml.SafeLoader):
    pass


def _construct_override(loader: _Loader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


_Loader.add_constructor("!override", _construct_override)
_Loader.add_constructor("!reset", lambda loader, node: Reset())


def read_compose_file(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """One compose file, variables interpolated, ``!reset``/``!override`` kept as markers."""
    text = _VARIABLE.sub(lambda match: _variable(match, env), path.read_text())
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader with two tags)


def load_compose(files: Sequence[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """The files merged in order, as Docker Compose merges ``-f a -f b``."""
    merged: dict[str, Any] = {}
    for path in files:
        merged = merge(merged, read_compose_file(path, env))
    return merged


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """``override`` merged onto ``base`` (see the module docstring)."""
    if isinstance(override, Override):
        return _plain(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value, (*path, key))
            else:
                merged[key] = _plain(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return _merge_lists(base, override, path)
    return _plain(override)


def _merge_lists(base: list[Any], override: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = path[-1] if path else ""
    if key in REPLACED_LISTS:
        return _plain(override)
    if key == "volumes" and len(path) == 3 and path[0] == "services":
        by_target = {_volume_target(v): v for v in base}
        by_target.update({_volume_target(v): _plain(v) for v in override})
        return list(by_target.values())
    if key in JOINED_LISTS:
        return base + [item for item in _plain(override) if item not in base]
    raise ComposeError(f"{'.'.join(path)}: no merge rule for this list")


def _volume_target(volume: Any) -> str:
    if isinstance(volume, dict):
        return volume["target"]
    raise ComposeError(f"volume {volume!r}: use the long syntax (type, source, target)")


def _plain(value: Any) -> Any:
    """``value`` without markers: nested ``!override`` unwrapped, nested ``!reset`` keys dropped."""
    if isinstance(value, Override):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _variable(match: re.Match[str], env: Mapping[str, str]) -> str:
    value = env.get(match["name"], "")
    if match["default"] is not None and not value:
        return match["default"][2:]
    return value


def container_ports(service: Mapping[str, Any]) -> list[int]:
    """The ports a service listens on in its container: ``expose`` and the container side of
    ``ports``."""
    published = [int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", [])]
    return sorted({*published, *(int(port) for port in service.get("expose", []))})


def dockerfile_args(dockerfile: Path) -> dict[str, str | None]:
    """The ``ARG`` names a Dockerfile declares, with their defaults."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found: dict[str, str | None] = {}
    for name, _, default in re.findall(r"^ARG\s+(\w+)(=(\S*))?", text, flags=re.MULTILINE):
        found[name] = default or None
    return found


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile builds from, ``ARG`` defaults substituted."""
    args = dockerfile_args(dockerfile)
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1]) or m[0], base) for base in bases]
