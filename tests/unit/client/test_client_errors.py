"""How the SDK reports the gateway's errors: one typed exception per status, with details."""

from __future__ import annotations

import hetclient
import httpx
import pytest
from hetclient.errors import MAX_MESSAGE_CHARS

STATUS_CLASSES = {
    400: hetclient.BadRequestError,
    401: hetclient.AuthenticationError,
    403: hetclient.PermissionDeniedError,
    404: hetclient.NotFoundError,
    405: hetclient.MethodNotAllowedError,
    408: hetclient.RequestTimeoutError,
    409: hetclient.ConflictError,
    413: hetclient.PayloadTooLargeError,
    415: hetclient.UnsupportedMediaTypeError,
    422: hetclient.UnprocessableEntityError,
    429: hetclient.RateLimitError,
    500: hetclient.InternalServerError,
    502: hetclient.BadGatewayError,
    503: hetclient.ServiceUnavailableError,
    504: hetclient.GatewayTimeoutError,
}


def test_every_status_the_gateway_answers_errors_with_has_a_class_of_its_own():
    """The contract lists every status the gateway sends; the SDK names each."""
    from hetcontract import ERRORS

    sent = {spec.status for spec in ERRORS.values()}
    assert sent == set(STATUS_CLASSES)
    assert len(set(STATUS_CLASSES.values())) == len(STATUS_CLASSES)


@pytest.mark.parametrize(("status", "error_class"), sorted(STATUS_CLASSES.items()))
def test_each_error_status_maps_to_its_own_class(status, error_class):
    assert hetclient.error_class_for_status(status) is error_class


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (418, hetclient.APIStatusError),
        (501, hetclient.InternalServerError),
        (599, hetclient.InternalServerError),
    ],
)
def test_statuses_without_a_class_map_to_the_nearest_general_one(status, error_class):
    assert hetclient.error_class_for_status(status) is error_class


def test_every_status_error_is_an_api_error_and_a_hetserve_error():
    for error_class in STATUS_CLASSES.values():
        assert issubclass(error_class, hetclient.APIStatusError)
        assert issubclass(error_class, hetclient.APIError)
        assert issubclass(error_class, hetclient.HetserveError)
    assert issubclass(hetclient.APITimeoutError, hetclient.APIConnectionError)
    assert not issubclass(hetclient.APIConnectionError, hetclient.APIStatusError)


@pytest.mark.parametrize(("status", "error_class"), sorted(STATUS_CLASSES.items()))
def test_an_error_answer_raises_its_class_with_the_servers_code_message_and_request_id(
    run_client, status, error_class
):
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": f"code_{status}", "message": f"what went wrong ({status})"}}
        return httpx.Response(status, json=body, headers={"X-Request-ID": "from-gateway"})

    with pytest.raises(error_class) as info:
        run_client(handler, lambda c: c.predict(b"x", model="fashion_het"), max_retries=0)
    error = info.value
    assert type(error) is error_class
    assert (error.status_code, error.code, error.message) == (
        status,
        f"code_{status}",
        f"what went wrong ({status})",
    )
    assert error.request_id == "from-gateway"
    assert error.response.status_code == status
    assert str(error) == f"{status} code_{status}: what went wrong ({status})"


def test_without_the_gateways_header_the_request_id_is_the_one_sent(run_client):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"error": {"code": "model_not_found", "message": "no"}})

    with pytest.raises(hetclient.NotFoundError) as info:
        run_client(handler, lambda c: c.model("nope"))
    assert info.value.request_id == seen[0].headers["x-request-id"]


def test_a_non_json_error_body_still_gives_a_typed_error_with_its_text(run_client):
    page = "<html>" + "bad gateway " * 100 + "</html>"

    with pytest.raises(hetclient.BadGatewayError) as info:
        run_client(lambda r: httpx.Response(502, text=page), lambda c: c.models())
    assert isinstance(info.value, hetclient.InternalServerError)
    assert info.value.code is None
    assert info.value.message == page[:MAX_MESSAGE_CHARS]


def test_an_empty_error_body_uses_the_reason_phrase(run_client):
    with pytest.raises(hetclient.NotFoundError) as info:
        run_client(lambda r: httpx.Response(404), lambda c: c.models())
    assert info.value.message == "Not Found"


def test_a_success_answer_off_the_contract_raises_response_validation_error(run_client):
    with pytest.raises(hetclient.APIResponseValidationError) as info:
        run_client(lambda r: httpx.Response(200, json={"results": "?"}), lambda c: c.predict(b"x"))
    assert info.value.status_code == 200


def test_health_raises_the_typed_error_when_the_gateway_fails(run_client):
    with pytest.raises(hetclient.InternalServerError):
        run_client(lambda r: httpx.Response(500), lambda c: c.health())
