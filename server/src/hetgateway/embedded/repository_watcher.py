"""New model versions without a restart: keep the embedded Triton in step with its sources.

The embedded Triton runs in explicit model-control mode (``TritonProcess(...,
explicit_model_control=True)``) on a repository derived from the source repositories
(``embedded.repository``). This watcher polls the sources every ``poll_interval_s``. A model
directory whose files changed (a new version exported, a new model) and then stayed the same
for one more poll (so a copy in progress is not picked up half-way) is derived again into a
staging directory, swapped in whole, and loaded through Triton's repository API; a model
directory that disappeared is unloaded.

Triton loads a new version beside the one serving and switches only once it is ready: requests
in flight on the old version complete on it, later ones go to the new one. A version whose
files are broken fails to load: the watcher logs Triton's reason as one ERROR line naming the
model and the version that keeps serving, and puts the previous derived files back, so that a
restart of Triton starts with what serves now. (Triton still lists the refused version as
UNAVAILABLE; readiness is therefore per model, see ``EXPLICIT_MODEL_CONTROL_ARGS``.)

Typical usage::

    watcher = RepositoryWatcher([Path("model_repo")], derived.path,
                                triton_http_url="127.0.0.1:8000", poll_interval_s=1.0)
    watcher.start()          # a daemon thread
    ...
    watcher.stop()
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hetgateway.embedded.repository import CONFIG_FILENAME, RepositoryError, derive_model

DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_LOAD_TIMEOUT_S = 300.0
INDEX_TIMEOUT_S = 10.0
READY_STATE = "READY"

Fingerprint = tuple[tuple[str, int, int], ...]
"""Every file of a model directory as (relative path, size, mtime in ns), sorted."""

_LOG = logging.getLogger(__name__)
_ABSENT: Fingerprint = ()


@dataclass(frozen=True)
class ModelChange:
    """What the watcher did about one model: loaded it (``versions``: what serves now),
    unloaded it, or refused its new files (``detail``: why; ``versions``: what still serves)."""

    name: str
    action: Literal["loaded", "unloaded", "refused"]
    versions: tuple[str, ...]
    detail: str = ""


class RepositoryWatcher:
    """Polls source repositories; re-derives and (un)loads the models whose files changed."""

    def __init__(
        self,
        sources: Sequence[Path],
        derived: Path,
        *,
        triton_http_url: str,
        ort_threads: int = 1,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    ) -> None:
        self._sources = tuple(sources)
        self._derived = derived
        self._triton = f"http://{triton_http_url}"
        self._ort_threads = ort_threads
        self._poll_interval_s = poll_interval_s
        self._load_timeout_s = load_timeout_s
        self._known = {name: fingerprint for name, (_, fingerprint) in self.scan().items()}
        self._pending: dict[str, Fingerprint] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> dict[str, tuple[Path, Fingerprint]]:
        """Every model directory of the sources (the first source wins a name) and its
        fingerprint."""
        found: dict[str, tuple[Path, Fingerprint]] = {}
        for source in self._sources:
            if not source.is_dir():
                continue
            for model_dir in sorted(p for p in source.iterdir() if p.is_dir()):
                if model_dir.name.startswith("."):  # an exporter's staging directory
                    continue
                if (model_dir / CONFIG_FILENAME).is_file() and model_dir.name not in found:
                    found[model_dir.name] = (model_dir, fingerprint(model_dir))
        return found

    def poll_once(self) -> list[ModelChange]:
        """One look at the sources; acts on each model whose change has settled."""
        current = self.scan()
        changes: list[ModelChange] = []
        for name in sorted(set(current) | set(self._known)):
            model_dir, now = current.get(name, (None, _ABSENT))
            if now == self._known.get(name, _ABSENT):
                self._pending.pop(name, None)
                continue
            if self._pending.get(name) != now:
                self._pending[name] = now  # changed: act once it holds still for a poll
                continue
            del self._pending[name]
            changes.append(self._unload(name) if model_dir is None else self._load(name, model_dir))
            if model_dir is None:
                self._known.pop(name, None)
            else:
                self._known[name] = now
        return changes

    def start(self) -> None:
        """Poll in a daemon thread until ``stop``."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="repository-watcher", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # the watcher must outlive any one bad look at the disk
                _LOG.exception("repository watcher: poll failed")

    def _load(self, name: str, model_dir: Path) -> ModelChange:
        target = self._derived / name
        staging = self._derived.parent / f".staging-{name}"
        retired = self._derived.parent / f".retired-{name}"
        for leftover in (staging, retired):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            derive_model(model_dir, staging, ort_threads=self._ort_threads)
        except (RepositoryError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            return self._refused(name, f"cannot derive {model_dir}: {exc}")
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        status, text = self._post(f"/v2/repository/models/{_quote(name)}/load",
                                  timeout_s=self._load_timeout_s)
        if status != 200:
            shutil.rmtree(target, ignore_errors=True)
            if retired.exists():
                retired.rename(target)
            return self._refused(name, _triton_error(text))
        shutil.rmtree(retired, ignore_errors=True)
        versions = self.serving_versions(name)
        _LOG.info("model %s: loaded from %s; version %s serving", name, model_dir,
                  ", ".join(versions) or "none")
        return ModelChange(name, "loaded", versions)

    def _unload(self, name: str) -> ModelChange:
        status, text = self._post(f"/v2/repository/models/{_quote(name)}/unload",
                                  timeout_s=self._load_timeout_s)
        shutil.rmtree(self._derived / name, ignore_errors=True)
        if status != 200:
            _LOG.warning("model %s: removed from the repository; unload failed: %s", name,
                         _triton_error(text))
        else:
            _LOG.info("model %s: removed from the repository, unloaded", name)
        return ModelChange(name, "unloaded", ())

    def _refused(self, name: str, reason: str) -> ModelChange:
        versions = self.serving_versions(name)
        serving = f"version {', '.join(versions)} keeps serving" if versions else "not served"
        _LOG.error("model %s: new files refused, %s: %s", name, serving, reason)
        return ModelChange(name, "refused", versions, reason)

    def serving_versions(self, name: str) -> tuple[str, ...]:
        """The versions of ``name`` Triton has READY now (empty when unreachable)."""
        status, text = self._post("/v2/repository/index", timeout_s=INDEX_TIMEOUT_S)
        if status != 200:
            return ()
        index = json.loads(text or "[]")
        ready = [e.get("version", "") for e in index
                 if e.get("name") == name and e.get("state") == READY_STATE]
        return tuple(sorted(ready, key=_version_order))

    def _post(self, path: str, *, timeout_s: float) -> tuple[int, str]:
        request = urllib.request.Request(self._triton + path, data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, json.dumps({"error": f"Triton unreachable: {exc}"})


def fingerprint(model_dir: Path) -> Fingerprint:
    """(relative path, size, mtime_ns) of every file under ``model_dir``, sorted; files that
    vanish while being listed are left out (the next poll sees the settled state)."""
    entries = []
    for path in model_dir.rglob("*"):
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            entries.append((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def _triton_error(text: str) -> str:
    """The first line of Triton's ``{"error": "..."}`` answer (its stack trace dropped)."""
    try:
        message = str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        message = text
    return message.strip().splitlines()[0] if message.strip() else "no reason given"


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")
