"""The gateway discovers models and their cards from Triton: from the ``model_card`` config
parameter, else from ``model_card.json`` in a repository it can see; models without a card
are not served."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from hetcontract import MODEL_CARD_PARAMETER
from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository
from hetgateway.embedded.repository import read_config
from hetgateway.errors import ModelNotFound
from hetgateway.model_catalog import ModelCatalog
from hetgateway.triton_backend import TritonBackend

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 240


async def discover(grpc_url: str, repositories: list[Path], *, ask_for: str | None = None
                   ) -> ModelCatalog:
    """A catalog refreshed from Triton; ``ask_for``: also look that model up."""
    backend = TritonBackend(grpc_url, control_timeout_s=2)
    catalog = ModelCatalog(backend, repositories=repositories)
    try:
        await catalog.refresh()
        if ask_for is not None:
            await catalog.get(ask_for)
    finally:
        await backend.close()
    return catalog


def test_cards_come_from_tritons_model_config_without_any_repository(triton_server, model_cards):
    catalog = asyncio.run(discover(triton_server.grpc_url, []))
    assert {name: entry.card for name, entry in catalog.entries.items()} == model_cards
    for entry in catalog.entries.values():
        assert entry.max_batch_size > 0


def test_without_the_config_parameter_cards_come_from_the_repository_or_the_model_is_not_served(
    model_repository, model_cards, tmp_path, unused_port
):
    stripped = tmp_path / "stripped"
    for name in model_cards:
        shutil.copytree(model_repository / name, stripped / name, symlinks=True)
        config = read_config(stripped / name / "config.pbtxt")
        del config.parameters[MODEL_CARD_PARAMETER]
        (stripped / name / "config.pbtxt").write_text(text_format.MessageToString(config))
        (stripped / name / "model_card.json").unlink()
    derived = derive_repository([stripped], tmp_path / "derived")
    ports = TritonPorts(http=unused_port(), grpc=unused_port(), metrics=unused_port())
    with TritonProcess([derived.path], ports=ports, log_path=tmp_path / "triton.log",
                       backend_dir=build_backend_dir(tmp_path / "backends")) as triton:
        triton.wait_ready(timeout_s=READY_TIMEOUT_S)
        from_files = asyncio.run(discover(triton.grpc_url, [model_repository]))
        assert {n: e.card for n, e in from_files.entries.items()} == model_cards
        with pytest.raises(ModelNotFound, match="served models: none"):
            asyncio.run(discover(triton.grpc_url, [stripped], ask_for=next(iter(model_cards))))
