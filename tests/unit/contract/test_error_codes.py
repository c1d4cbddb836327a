"""The contract owns every error code and its status: the gateway answers each of its domain
errors with a code from the table, and the SDK has a class for every status in it."""

from __future__ import annotations

from hetcontract import ERRORS, RETRYABLE_STATUSES, ErrorCode, status_meaning


def test_every_code_has_a_status_and_a_meaning():
    assert set(ERRORS) == set(ErrorCode)
    for code, spec in ERRORS.items():
        assert 400 <= spec.status < 600 and spec.meaning, code


def test_the_retryable_statuses_are_statuses_the_gateway_sends():
    assert {spec.status for spec in ERRORS.values()} >= RETRYABLE_STATUSES
    assert {429, 503} == RETRYABLE_STATUSES


def test_a_status_is_described_by_every_code_answered_with_it():
    assert "no model of that name" in status_meaning(404)
    assert "no such path" in status_meaning(404)


def test_the_gateway_maps_every_domain_error_to_a_contract_code():
    from hetgateway.http_errors import ERROR_CODES, ERROR_TABLE

    for error, code in ERROR_CODES.items():
        assert ERROR_TABLE[error].status == ERRORS[code].status
    answered = set(ERROR_CODES.values()) | {ErrorCode.INTERNAL_ERROR, ErrorCode.HTTP_ERROR}
    assert answered == set(ErrorCode), "a code in the contract that the gateway never sends"
