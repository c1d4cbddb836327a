"""When the SDK resends and how long it waits: backoff with jitter, Retry-After, give-up."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import hetclient
import httpx
import pytest
from hetclient.retries import (
    INITIAL_RETRY_DELAY_S,
    JITTER_FRACTION,
    MAX_RETRY_AFTER_S,
    MAX_RETRY_DELAY_S,
    backoff_delay_s,
    parse_retry_after_s,
)


def _answers(*responses: httpx.Response | Exception):
    """A handler giving these answers in turn (an exception is raised as the transport's)."""
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def _unavailable(retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": "backend_unavailable", "message": "Triton is not reachable"}}
    return httpx.Response(503, json=body, headers=headers)


def test_backoff_doubles_from_the_initial_delay_and_is_capped():
    no_jitter = random.Random()
    no_jitter.random = lambda: 0.0  # type: ignore[method-assign]
    delays = [backoff_delay_s(n, rng=no_jitter) for n in range(10)]
    assert delays[:3] == [
        INITIAL_RETRY_DELAY_S,
        2 * INITIAL_RETRY_DELAY_S,
        4 * INITIAL_RETRY_DELAY_S,
    ]
    assert max(delays) == MAX_RETRY_DELAY_S == delays[-1]


def test_backoff_jitter_stays_within_its_fraction_below_the_base_delay():
    rng = random.Random(0)
    draws = [backoff_delay_s(1, rng=rng) for _ in range(2000)]
    base = 2 * INITIAL_RETRY_DELAY_S
    assert min(draws) >= base * (1 - JITTER_FRACTION)
    assert max(draws) <= base
    assert max(draws) - min(draws) > 0.9 * base * JITTER_FRACTION  # it really spreads


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0.25", 0.25),
        (" 1 ", 1.0),
        ("-3", 0.0),
        ("9999", MAX_RETRY_AFTER_S),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_in_seconds_is_read_clamped_and_garbage_ignored(header, expected):
    assert parse_retry_after_s(header) == expected


def test_retry_after_as_an_http_date_is_the_time_until_then():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after_s(header, now=now) == pytest.approx(7.0)
    past = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert parse_retry_after_s(past, now=now) == 0.0


def test_a_503_then_success_is_retried_after_backoff(run_client, make_answer):
    handler = _answers(_unavailable(), httpx.Response(200, json=make_answer().model_dump()))
    outcome = run_client(handler, lambda c: c.predict(b"x"))
    assert outcome.result == make_answer()
    assert len(outcome.sleeps) == 1
    assert (
        INITIAL_RETRY_DELAY_S * (1 - JITTER_FRACTION) <= outcome.sleeps[0] <= INITIAL_RETRY_DELAY_S
    )


def test_all_attempts_of_one_call_share_its_request_id(run_client, make_answer):
    handler = _answers(
        _unavailable(), _unavailable(), httpx.Response(200, json=make_answer().model_dump())
    )
    run_client(handler, lambda c: c.predict(b"x"))
    ids = {request.headers["x-request-id"] for request in handler.seen}
    assert len(handler.seen) == 3 and len(ids) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_from_the_gateway_is_honoured(run_client, make_answer, status):
    refusal = httpx.Response(
        status, json={"error": {"code": "busy", "message": "later"}}, headers={"Retry-After": "3"}
    )
    handler = _answers(refusal, httpx.Response(200, json=make_answer().model_dump()))
    outcome = run_client(handler, lambda c: c.predict(b"x"))
    assert outcome.sleeps == [3.0]


def test_after_max_retries_the_last_503_is_raised_with_its_details(run_client):
    handler = _answers(*[_unavailable("1")] * 4)
    with pytest.raises(hetclient.ServiceUnavailableError) as info:
        run_client(handler, lambda c: c.predict(b"x"), max_retries=3)
    assert len(handler.seen) == 4
    assert info.value.code == "backend_unavailable"
    assert info.value.message == "Triton is not reachable"


def test_default_max_retries_means_three_attempts(run_client):
    handler = _answers(*[_unavailable()] * 3)
    with pytest.raises(hetclient.ServiceUnavailableError):
        run_client(handler, lambda c: c.predict(b"x"))
    assert hetclient.DEFAULT_MAX_RETRIES == 2 and len(handler.seen) == 3


def test_max_retries_zero_sends_once(run_client):
    handler = _answers(_unavailable())
    with pytest.raises(hetclient.ServiceUnavailableError):
        run_client(handler, lambda c: c.predict(b"x"), max_retries=0)
    assert len(handler.seen) == 1


@pytest.mark.parametrize("status", [400, 404, 413, 415, 422, 500, 504])
def test_other_error_statuses_are_not_retried(run_client, status):
    handler = _answers(httpx.Response(status, json={"error": {"code": "x", "message": "y"}}))
    with pytest.raises(hetclient.APIStatusError):
        run_client(handler, lambda c: c.predict(b"x"))
    assert len(handler.seen) == 1


def test_connection_errors_are_retried_with_growing_backoff(run_client, make_answer):
    refused = httpx.ConnectError("connection refused")
    handler = _answers(refused, refused, httpx.Response(200, json=make_answer().model_dump()))
    outcome = run_client(handler, lambda c: c.predict(b"x"))
    assert outcome.result == make_answer()
    first, second = outcome.sleeps
    assert first <= INITIAL_RETRY_DELAY_S < second <= 2 * INITIAL_RETRY_DELAY_S


def test_persistent_connection_errors_raise_api_connection_error(run_client):
    handler = _answers(*[httpx.ConnectError("connection refused")] * 3)
    with pytest.raises(hetclient.APIConnectionError) as info:
        run_client(handler, lambda c: c.models())
    assert not isinstance(info.value, hetclient.APITimeoutError)
    assert info.value.request_id == handler.seen[0].headers["x-request-id"]
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "timeout", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("slow")]
)
def test_timeouts_raise_api_timeout_error_after_the_retries(run_client, timeout):
    handler = _answers(timeout, timeout, timeout)
    with pytest.raises(hetclient.APITimeoutError):
        run_client(handler, lambda c: c.predict(b"x"))
    assert len(handler.seen) == 3


def test_ready_answers_false_on_503_at_once_without_retrying(run_client):
    handler = _answers(_unavailable("5"))
    outcome = run_client(handler, lambda c: c.ready())
    assert outcome.result is False and outcome.sleeps == [] and len(handler.seen) == 1


def test_a_real_server_that_never_answers_times_out_as_api_timeout_error(client_kind):
    """A listening socket that accepts no request: the read times out in ``timeout_s``."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(hetclient.APITimeoutError):
            if client_kind == "sync":
                with hetclient.Client(url, timeout_s=0.2, max_retries=0) as client:
                    client.health()
            else:
                import asyncio

                async def probe() -> None:
                    async with hetclient.AsyncClient(url, timeout_s=0.2, max_retries=0) as client:
                        await client.health()

                asyncio.run(probe())


def test_a_closed_port_raises_api_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        hetclient.Client(f"http://127.0.0.1:{port}", max_retries=0) as client,
        pytest.raises(hetclient.APIConnectionError, match="cannot reach"),
    ):
        client.health()
