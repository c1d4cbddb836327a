"""Which models the gateway serves, with their model cards, discovered from Triton.

A model is served when Triton's repository index lists it and a model card is found for it:
first in its config's ``model_card`` parameter (``hetcontract.MODEL_CARD_PARAMETER``, so it
works against any Triton), else in ``<repository>/<name>/model_card.json`` in one of the
repositories the gateway can see. Models without a card (an ensemble's parts) are not served.

Discovery runs at startup and again, lazily and at most once per ``REFRESH_INTERVAL_S``, when
a request names a model the catalog does not know (Triton was down at startup, or loaded a
model later) or lists the models, and at once when Triton answers with a version the catalog
does not know yet (``for_version``: a new version was loaded). A model's entry is its newest
READY version, with the card Triton's config holds for it; the entries of the previous
refresh are kept by version, so that an answer computed by the old version during a switch is
shaped with the old version's card.

Typical usage::

    catalog = ModelCatalog(backend, repositories=[Path("model_repo")], default_model=None)
    await catalog.refresh()
    entry = await catalog.get("fashion_het")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from hetcontract import MODEL_CARD_FILENAME, MODEL_CARD_PARAMETER, ModelCard
from pydantic import ValidationError

from hetgateway.backend import InferenceBackend, RepositoryEntry
from hetgateway.decisions import DecisionTable
from hetgateway.errors import GatewayError, ModelNotFound

REFRESH_INTERVAL_S = 1.0
"""Least time between two lazy re-discoveries triggered by unknown model names."""
READY_STATE = "READY"

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    """One served model: Triton's name and version, its batch limit, its card and the card's
    decision thresholds ready to apply (None: the card has no calibration)."""

    name: str
    version: str
    max_batch_size: int
    card: ModelCard
    outputs: frozenset[str] = frozenset()
    """The model's output names, from its Triton config."""
    decisions: DecisionTable | None = None


class ModelCatalog:
    """The served models, refreshed from Triton on demand."""

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        repositories: Sequence[Path] = (),
        default_model: str | None = None,
    ) -> None:
        self._backend = backend
        self._repositories = tuple(repositories)
        self._configured_default = default_model
        self._entries: Mapping[str, CatalogEntry] = MappingProxyType({})
        self._previous: Mapping[tuple[str, str], CatalogEntry] = MappingProxyType({})
        self._default_name: str | None = default_model or None
        self._lock = asyncio.Lock()
        self._last_refresh = float("-inf")

    @property
    def entries(self) -> Mapping[str, CatalogEntry]:
        """The models known now, by name (read-only; a refresh replaces it whole)."""
        return self._entries

    @property
    def default_name(self) -> str | None:
        """The configured default model, else the first heteroscedastic model by name (the
        product's point), else the first model by name (worked out at each refresh)."""
        return self._default_name

    async def refresh(self) -> None:
        """Re-discover every model from Triton; raises ``BackendUnavailable`` when unreachable."""
        async with self._lock:
            await self._refresh_locked()

    async def ensure_discovered(self) -> None:
        """Refresh if nothing is known yet (Triton was unreachable so far); requests that
        waited for another's refresh do not repeat it."""
        if self._entries:
            return
        async with self._lock:
            if not self._entries:
                await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        self._last_refresh = time.monotonic()
        index = await self._backend.repository_index()
        found: dict[str, CatalogEntry] = {}
        for item in _newest_ready(index):
            entry = await self._discover(item.name, item.version)
            if entry is not None:
                found[entry.name] = entry
        self._previous = MappingProxyType(
            {(e.name, e.version): e for e in self._entries.values()}
        )
        self._entries = MappingProxyType(found)
        self._default_name = self._configured_default or _first_model(found)

    async def get(self, name: str | None) -> CatalogEntry:
        """The entry for ``name`` (None: the default model); ``ModelNotFound`` if not served."""
        await self.ensure_discovered()
        name = name or self.default_name
        if name is None:
            raise ModelNotFound("no model is served and no default model is configured")
        if name not in self._entries and self._may_refresh():
            await self.refresh()
        if name not in self._entries:
            served = ", ".join(sorted(self._entries)) or "none"
            raise ModelNotFound(f"no model named {name!r}; served models: {served}")
        return self._entries[name]

    async def for_version(self, entry: CatalogEntry, version: str) -> CatalogEntry:
        """The entry for the ``version`` of ``entry``'s model that Triton answered with:
        ``entry`` itself when it is that version, else the catalog refreshed (once, whoever
        asks first) or the previous refresh's entry for it; failing both, ``entry`` named
        ``version``."""
        if not version or version == entry.version:
            return entry
        current = self._entries.get(entry.name)
        if current is None or current.version != version:
            async with self._lock:
                current = self._entries.get(entry.name)
                if current is None or current.version != version:
                    await self._refresh_locked()
                    current = self._entries.get(entry.name)
        if current is not None and current.version == version:
            return current
        return self._previous.get((entry.name, version)) or replace(entry, version=version)

    async def refresh_if_stale(self) -> None:
        """Refresh when the last one is older than ``REFRESH_INTERVAL_S`` (listings show a new
        version soon after it loads); keeps what is known when Triton cannot be asked."""
        if self._entries and not self._may_refresh():
            return
        try:
            await self.refresh()
        except GatewayError:
            if not self._entries:
                raise

    def _may_refresh(self) -> bool:
        return time.monotonic() - self._last_refresh >= REFRESH_INTERVAL_S

    async def _discover(self, name: str, version: str) -> CatalogEntry | None:
        try:
            config = await self._backend.model_config(name)
        except GatewayError as exc:
            _LOG.info("model %s skipped: no config from Triton (%s)", name, exc)
            return None
        card = self._card(name, config.parameters.get(MODEL_CARD_PARAMETER))
        if card is None:
            _LOG.info("model %s skipped: no model card", name)
            return None
        return CatalogEntry(
            name=name,
            version=version or card.version,
            max_batch_size=config.max_batch_size,
            card=card,
            outputs=config.outputs,
            decisions=DecisionTable.from_card(card),
        )

    def _card(self, name: str, parameter: str | None) -> ModelCard | None:
        """The first valid card: the config parameter, else each repository's file in turn
        (a file is read only when everything before it failed)."""
        for origin, text in self._card_sources(name, parameter):
            try:
                return ModelCard.model_validate_json(text)
            except ValidationError as exc:
                _LOG.warning("model %s: invalid model card in %s: %s", name, origin, exc)
        return None

    def _card_sources(self, name: str, parameter: str | None) -> Iterator[tuple[str, str]]:
        if parameter:
            yield f"config parameter {MODEL_CARD_PARAMETER!r}", parameter
        for repository in self._repositories:
            path = repository / name / MODEL_CARD_FILENAME
            if path.is_file():
                yield str(path), path.read_text(encoding="utf-8")


def _newest_ready(index: Sequence[RepositoryEntry]) -> list[RepositoryEntry]:
    """One index row per model: its newest READY version, else its newest version listed."""
    rows: dict[str, RepositoryEntry] = {}
    for item in index:
        best = rows.get(item.name)
        if best is None or _rank(item) > _rank(best):
            rows[item.name] = item
    return [rows[name] for name in sorted(rows)]


def _rank(item: RepositoryEntry) -> tuple[bool, int]:
    return (item.state == READY_STATE, int(item.version) if item.version.isdigit() else -1)


def _first_model(entries: Mapping[str, CatalogEntry]) -> str | None:
    """The first heteroscedastic model by name (the product's point), else the first by name."""
    ranked = sorted(entries, key=lambda name: (entries[name].card.head == "det", name))
    return ranked[0] if ranked else None
