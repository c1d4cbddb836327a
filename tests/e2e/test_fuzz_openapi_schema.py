"""Fuzz the live gateway from its own OpenAPI schema with schemathesis: no input, however odd,
makes it answer 5xx (Triton is up, so 503/504 would be a bug here too).

Bounded: ``MAX_EXAMPLES`` generated cases per operation. Hypothesis keeps failing examples in
``tests/e2e/corpus/<operation>/`` (committed) and replays them first on every run. (The
schemathesis pytest plugin does not run under pytest 9, so the strategies are driven by
Hypothesis directly.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CORPUS = Path(__file__).parent / "corpus"
MAX_EXAMPLES = 30
REQUEST_TIMEOUT_S = 30


def _corpus_for(label: str) -> DirectoryBasedExampleDatabase:
    """One example database per operation, e.g. ``corpus/POST_v1_predict``."""
    return DirectoryBasedExampleDatabase(str(CORPUS / re.sub(r"[^A-Za-z0-9]+", "_", label)))


def test_no_generated_request_gets_a_server_error(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /v1/predict", "POST /v1/models/{model}/predict", "GET /v1/models"} <= labels
    failures = {}
    for operation in operations:

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=_corpus_for(operation.label),
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            case.call_and_validate(
                base_url=gateway_url, checks=[not_a_server_error], timeout=REQUEST_TIMEOUT_S
            )

        try:
            fuzz()
        except Exception as error:  # noqa: BLE001 - collected and reported per operation
            failures[operation.label] = f"{type(error).__name__}: {str(error)[:2000]}"
    assert not failures, failures
