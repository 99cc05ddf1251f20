"""The Postmark and Courier stand-ins refuse what the real APIs refuse, in their words, and
resetflow's providers send what they accept and read their errors right: which failures
are worth a retry, and which are about the recipient."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, ProviderError, SendResult
from resetflow.notify.providers.courier import CourierProvider
from resetflow.notify.providers.postmark import PostmarkProvider
from resetflow.notify.providers.twilio import TwilioProvider
from tests.standins.courier import CourierStandIn
from tests.standins.fixtures import (  # noqa: F401
    courier_fixture,
    postmark_fixture,
    twilio_fixture,
)
from tests.standins.postmark import PostmarkStandIn
from tests.standins.twilio import TEST_SENDER, TwilioStandIn

EMAIL = "ada@example.com"
PHONE = "+14155550100"
JSON = {"Accept": "application/json", "Content-Type": "application/json"}


def _send(provider: Provider, message: RenderedMessage) -> SendResult:
    async def go() -> SendResult:
        try:
            return await provider.send(message)
        finally:
            await provider.close()

    return asyncio.run(go())


def _failure(provider: Provider, message: RenderedMessage) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        _send(provider, message)
    return caught.value


def _email(**extra: Any) -> RenderedMessage:
    return RenderedMessage(
        notification="password-reset-token",
        channel=Channel.EMAIL,
        to=EMAIL,
        subject="Your password reset token",
        text="Hello Ada, here is your 123456\n",
        html="<p>Hello Ada, here is your <b>123456</b></p>",
        **extra,
    )


def _sms(**extra: Any) -> RenderedMessage:
    return RenderedMessage(
        notification="password-reset-token",
        channel=Channel.SMS,
        to=PHONE,
        text="Hi there Ada 👋 Your password reset token is: 123456",
        **extra,
    )


# Postmark: the stand-in ----------------------------------------------------------------------


def _postmark_post(
    standin: PostmarkStandIn, body: Any, *, token: str | None = "good", headers: Any = None
) -> httpx.Response:
    sent_headers = dict(JSON if headers is None else headers)
    if token is not None:
        sent_headers["X-Postmark-Server-Token"] = standin.server_token if token == "good" else token
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{standin.url}/email", content=content, headers=sent_headers, timeout=10)


def _good_email(standin: PostmarkStandIn) -> dict[str, Any]:
    return {"From": standin.sender, "To": EMAIL, "Subject": "Hi", "TextBody": "Hello"}


def _assert_postmark_error(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"ErrorCode", "Message"}
    assert body["ErrorCode"] == code
    assert isinstance(body["Message"], str) and body["Message"]
    return str(body["Message"])


def test_postmark_standin_accepts_a_valid_email(postmark: PostmarkStandIn) -> None:
    answer = _postmark_post(postmark, {**_good_email(postmark), "MessageStream": "outbound"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"To", "SubmittedAt", "MessageID", "ErrorCode", "Message"}
    assert (body["To"], body["ErrorCode"], body["Message"]) == (EMAIL, 0, "OK")
    [sent] = postmark.messages
    assert (sent.message_id, sent.to, sent.text) == (body["MessageID"], EMAIL, "Hello")


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "No Account or Server API tokens"), ("wrong", "not contain a valid Server token")],
)
def test_postmark_standin_wants_the_server_token(
    postmark: PostmarkStandIn, token: str | None, message: str
) -> None:
    answer = _postmark_post(postmark, _good_email(postmark), token=token)
    assert message in _assert_postmark_error(answer, 401, 10)
    assert postmark.messages == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"headers": {"Content-Type": "application/json"}}, 422, 409),  # no Accept
        ({"headers": {"Accept": "application/json", "Content-Type": "text/plain"}}, 422, 409),
        ({"body": b"{not json"}, 422, 402),
        ({"body": ["a list"]}, 422, 403),
        ({"fields": {"Subjet": "typo"}}, 422, 403),
        ({"fields": {"TrackOpens": "yes"}}, 422, 403),
        ({"fields": {"From": None}}, 422, 300),
        ({"fields": {"From": "someone@else.example"}}, 422, 400),
        ({"fields": {"To": ""}}, 422, 300),
        ({"fields": {"To": "not-an-address"}}, 422, 300),
        ({"fields": {"TextBody": None}}, 422, 300),
        ({"fields": {"MessageStream": "broadcast"}}, 422, 1235),
    ],
)
def test_postmark_standin_refuses_bad_requests_with_postmarks_codes(
    postmark: PostmarkStandIn, change: dict[str, Any], status: int, code: int
) -> None:
    body: Any = {**_good_email(postmark), **change.get("fields", {})}
    body = {k: v for k, v in body.items() if v is not None}
    answer = _postmark_post(postmark, change.get("body", body), headers=change.get("headers"))
    _assert_postmark_error(answer, status, code)
    assert postmark.messages == []


def test_postmark_standin_failure_switches(postmark: PostmarkStandIn) -> None:
    postmark.deactivate(EMAIL)
    message = _assert_postmark_error(_postmark_post(postmark, _good_email(postmark)), 422, 406)
    assert "inactive" in message and EMAIL in message
    postmark.recover()
    postmark.outage(503, requests=1)
    assert _postmark_post(postmark, _good_email(postmark)).status_code == 503
    assert _postmark_post(postmark, _good_email(postmark)).status_code == 200
    assert len(postmark.messages) == 1


# Postmark: the provider -----------------------------------------------------------------------


def _postmark(standin: PostmarkStandIn, **options: Any) -> PostmarkProvider:
    values: dict[str, Any] = {
        "server_token": standin.server_token,
        "sender": standin.sender,
        "base_url": standin.url,
    }
    values.update(options)
    return PostmarkProvider(**values)


def test_postmark_provider_sends_what_postmark_accepts(postmark: PostmarkStandIn) -> None:
    result = _send(_postmark(postmark), _email())
    [request] = postmark.requests
    assert request.status == 200, request.answer
    assert result.provider_message_id == request.answer["MessageID"]


def test_postmark_provider_reads_the_errors(postmark: PostmarkStandIn) -> None:
    wrong_token = _failure(_postmark(postmark, server_token="wrong"), _email())
    assert (str(wrong_token), wrong_token.retryable, wrong_token.recipient) == (
        "Postmark 401 ErrorCode 10",
        False,
        False,
    )
    postmark.outage(503, requests=1)
    outage = _failure(_postmark(postmark), _email())
    assert (outage.retryable, outage.recipient) == (True, False)
    postmark.deactivate(EMAIL)
    inactive = _failure(_postmark(postmark), _email())
    assert (str(inactive), inactive.retryable, inactive.recipient) == (
        "Postmark 422 ErrorCode 406",
        False,
        True,
    )
    postmark.recover()
    postmark.slow(1.0, requests=1)
    slow = _failure(_postmark(postmark, timeout=0.2), _email())
    assert (str(slow), slow.retryable, slow.recipient) == (
        "Postmark unreachable: ReadTimeout",
        True,
        False,
    )


# Courier: the stand-in ----------------------------------------------------------------------


def _courier_post(
    standin: CourierStandIn,
    path: str,
    body: Any,
    *,
    token: str | None = "good",
    key: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {standin.auth_token if token == 'good' else token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{standin.url}{path}", content=json.dumps(body).encode(), headers=headers, timeout=10
    )


def _good_send() -> dict[str, Any]:
    return {
        "message": {
            "to": {"email": EMAIL},
            "content": {"title": "Hi", "body": "Hello"},
            "routing": {"method": "single", "channels": ["email"]},
        }
    }


def _assert_courier_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "type"}
    assert body["type"] == kind


@pytest.mark.parametrize("token", [None, "wrong"])
def test_courier_standin_wants_the_bearer_token(courier: CourierStandIn, token: str | None) -> None:
    for path, body in (("/send", _good_send()), ("/profiles/u1", {"profile": {"email": EMAIL}})):
        answer = _courier_post(courier, path, body, token=token)
        _assert_courier_error(answer, 401, "authentication_error")
        assert answer.json()["message"] == "Unauthorized"
    assert courier.messages == []
    assert courier.profiles == {}


def test_courier_standin_merges_profiles_and_delivers_by_them(courier: CourierStandIn) -> None:
    first = _courier_post(courier, "/profiles/u1", {"profile": {"email": EMAIL, "name": "Ada"}})
    assert (first.status_code, first.json()) == (200, {"status": "SUCCESS"})
    _courier_post(courier, "/profiles/u1", {"profile": {"phone_number": PHONE}})
    assert courier.profiles == {"u1": {"email": EMAIL, "name": "Ada", "phone_number": PHONE}}
    _assert_courier_error(
        _courier_post(courier, "/profiles/u1", {"email": EMAIL}), 400, "invalid_request_error"
    )

    sent = _courier_post(
        courier,
        "/send",
        {
            "message": {
                "to": {"user_id": "u1"},
                "template": "TEMPLATE123",
                "data": {"token": "123456"},
                "routing": {"method": "single", "channels": ["sms", "email"]},
            }
        },
    )
    assert sent.status_code == 202, sent.text
    assert set(sent.json()) == {"requestId"}
    [message] = courier.messages
    assert (message.channel, message.address, message.template) == ("sms", PHONE, "TEMPLATE123")
    assert message.request_id == sent.json()["requestId"]

    nowhere = {"message": {"to": {"user_id": "nobody"}, "content": {"title": "", "body": "x"}}}
    assert _courier_post(courier, "/send", nowhere).status_code == 202
    assert courier.messages[-1].status == "undeliverable"


@pytest.mark.parametrize(
    "message",
    [
        None,
        {"to": {"email": EMAIL}},  # neither template nor content
        {"to": {"email": EMAIL}, "template": "T", "content": {"title": "", "body": "x"}},
        {"to": {"email": EMAIL}, "content": {"body": "no title"}},
        {"to": {"email": EMAIL}, "content": {"title": "", "body": "x"}, "subject": "typo"},
        {"to": {"emial": EMAIL}, "content": {"title": "", "body": "x"}},
        {"to": [{"email": EMAIL}], "content": {"title": "", "body": "x"}},
        {"to": {}, "content": {"title": "", "body": "x"}},
        {
            "to": {"email": EMAIL},
            "content": {"title": "", "body": "x"},
            "routing": {"method": "first", "channels": ["email"]},
        },
        {"to": {"email": EMAIL}, "template": "T", "data": ["not", "an", "object"]},
    ],
)
def test_courier_standin_refuses_bad_sends(
    courier: CourierStandIn, message: dict[str, Any] | None
) -> None:
    body = {"message": message} if message is not None else {"event": "legacy"}
    _assert_courier_error(_courier_post(courier, "/send", body), 400, "invalid_request_error")
    assert courier.messages == []


def test_courier_standin_answers_a_repeated_idempotency_key_without_sending_again(
    courier: CourierStandIn,
) -> None:
    refused = _courier_post(courier, "/send", {"message": {"to": {}}}, key="k1")
    assert refused.status_code == 400  # a refusal is not stored under the key
    first = _courier_post(courier, "/send", _good_send(), key="k1")
    again = _courier_post(courier, "/send", _good_send(), key="k1")
    other = _courier_post(courier, "/send", _good_send(), key="k2")
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json() == again.json() != other.json()
    assert [m.idempotency_key for m in courier.messages] == ["k1", "k2"]


# Courier: the provider ----------------------------------------------------------------------


def _courier(standin: CourierStandIn, **options: Any) -> CourierProvider:
    values: dict[str, Any] = {"auth_token": standin.auth_token, "base_url": standin.url}
    values.update(options)
    return CourierProvider(**values)


def test_courier_provider_sms_without_an_account_is_one_inline_send(
    courier: CourierStandIn,
) -> None:
    """No account: no profile merge; the number inline, the sms channel pinned, the text
    as content (no title for SMS), and no idempotency header without a job id."""
    result = _send(_courier(courier, template="TEMPLATE123"), _sms(recipient_id=None))
    [request] = courier.requests
    assert (request.path, request.status) == ("/send", 202)
    assert request.json == {
        "message": {
            "to": {"phone_number": PHONE},
            "routing": {"method": "single", "channels": ["sms"]},
            "template": "TEMPLATE123",
            "data": {},
        }
    }
    assert "idempotency-key" not in request.headers
    assert result.provider_message_id == request.answer["requestId"]


def test_courier_provider_inline_email_for_an_account(courier: CourierStandIn) -> None:
    message = _email(
        recipient_id="user 1", idempotency_key="job1", variables={"name": "Ada", "token": "1"}
    )
    _send(_courier(courier), message)
    [send] = courier.requests  # the profile is merged by a job of its own, not here
    assert send.json == {
        "message": {
            "to": {"user_id": "user 1", "email": EMAIL},
            "routing": {"method": "single", "channels": ["email"]},
            "content": {"title": "Your password reset token", "body": message.text},
        }
    }
    assert send.headers["idempotency-key"] == "job1-email"


def _merge(provider: CourierProvider, user_id: str, profile: dict[str, Any]) -> None:
    async def go() -> None:
        try:
            await provider.merge_profile(user_id, profile)
        finally:
            await provider.close()

    asyncio.run(go())


def test_courier_provider_merges_a_profile(courier: CourierStandIn) -> None:
    profile = {"email": EMAIL, "name": "Ada", "custom": {"preference": "email"}}
    _merge(_courier(courier), "user 1", profile)
    [merge] = courier.requests
    assert (merge.method, merge.path, merge.status) == ("POST", "/profiles/user%201", 200)
    assert merge.json == {"profile": profile}
    assert courier.profiles == {"user 1": profile}
    with pytest.raises(ProviderError) as caught:
        _merge(_courier(courier, auth_token="wrong"), "u1", profile)
    assert (str(caught.value), caught.value.retryable) == (
        "Courier profile merge 401 authentication_error",
        False,
    )


def test_courier_provider_reads_the_errors(courier: CourierStandIn) -> None:
    denied = _failure(_courier(courier, auth_token="wrong"), _email(recipient_id="u1"))
    assert (str(denied), denied.retryable, denied.recipient) == (
        "Courier send 401 authentication_error",
        False,
        False,
    )
    courier.outage(503, requests=1)
    down = _failure(_courier(courier), _email())
    assert (str(down), down.retryable, down.recipient) == (
        "Courier send 503 api_error",
        True,
        False,
    )
    courier.slow(1.0, requests=1)
    slow = _failure(_courier(courier, timeout=0.2), _email())
    assert (slow.retryable, slow.recipient) == (True, False)


# Twilio: which refusals are about the recipient -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable", "recipient"),
    [
        (400, 21610, False, True),
        (400, 21211, False, True),
        (400, 21614, False, True),
        (400, 21612, False, False),
        (500, 20500, True, False),
    ],
)
def test_twilio_provider_flags_errors_about_the_number(
    twilio: TwilioStandIn, status: int, code: int, retryable: bool, recipient: bool
) -> None:
    twilio.fail_number(PHONE, code=code, message="refused", status=status)
    provider = TwilioProvider(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        sender=TEST_SENDER,
        base_url=twilio.url,
    )
    error = _failure(provider, _sms())
    assert (error.retryable, error.recipient) == (retryable, recipient)
    assert str(error) == f"Twilio {status} code {code}"
