"""The Twilio stand-in checks requests the way Twilio's published description says, and
resetflow's TwilioProvider sends requests that pass those checks."""

from __future__ import annotations

import asyncio
import copy
import email.utils
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import ProviderError, SendResult
from resetflow.notify.providers.twilio import TwilioProvider
from tests.standins.fixtures import twilio_fixture  # noqa: F401
from tests.standins.twilio import (
    MESSAGES_PATH,
    TEST_SENDER,
    TwilioStandIn,
    error_validator,
    message_validator,
    request_validator,
    spec,
)

TO = "+14155550100"
BODY = "Hi there Ada Lovelace 👋 Your password reset token is: 123456"
SID_PATTERN = re.compile(r"SM[0-9a-f]{32}")


def _post(
    standin: TwilioStandIn,
    data: dict[str, Any] | None = None,
    *,
    url: str | None = None,
    auth: tuple[str, str] | str | None = "good",
    **options: Any,
) -> httpx.Response:
    credentials = (standin.account_sid, standin.auth_token) if auth == "good" else auth
    return httpx.post(
        url or standin.messages_url,
        data=data if data is not None else None,
        auth=credentials,  # type: ignore[arg-type]
        timeout=10,
        **options,
    )


def _good_form() -> dict[str, str]:
    return {"To": TO, "From": TEST_SENDER, "Body": BODY}


def _assert_twilio_error(response: httpx.Response, *, status: int, code: int) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error_validator().validate(body)
    assert body["code"] == code
    assert body["status"] == status
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    return body


# The schemas themselves ----------------------------------------------------------------


def test_response_schema_accepts_twilios_own_examples_and_rejects_broken_resources() -> None:
    """The converted 201 schema is not vacuous: Twilio's examples pass, tampered copies fail."""
    examples = spec()["paths"][MESSAGES_PATH]["post"]["responses"]["201"]["content"][
        "application/json"
    ]["examples"]
    assert examples
    for example in examples.values():
        message_validator().validate(example["value"])

    original = examples["create"]["value"]
    tampered: list[tuple[str, Any]] = [
        ("sid", "XX" + "a" * 32),
        ("sid", "SM123"),
        ("status", "teleported"),
        ("account_sid", "AC" + "z" * 32),
        ("error_code", "none"),
        ("date_created", "2023-08-24T05:01:45Z"),
        ("direction", "sideways"),
        ("num_segments", 1),
    ]
    for key, value in tampered:
        broken = copy.deepcopy(original)
        broken[key] = value
        assert not message_validator().is_valid(broken), f"{key}={value!r} was accepted"


def test_request_schema_is_twilios_with_unknown_fields_and_the_conditional_rule() -> None:
    """The request schema has every documented field, refuses others, and needs a sender
    and a content, as the operation's ``x-twilio.conditional`` says."""
    documented = spec()["paths"][MESSAGES_PATH]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]["properties"]
    assert set(request_validator().schema["properties"]) == set(documented)
    assert request_validator().is_valid({"To": TO, "From": TEST_SENDER, "Body": "x"})
    assert request_validator().is_valid(
        {"To": TO, "MessagingServiceSid": "MG" + "a" * 32, "ContentSid": "HX" + "b" * 32}
    )
    assert not request_validator().is_valid({"To": TO, "From": TEST_SENDER})
    assert not request_validator().is_valid({"To": TO, "Body": "x"})
    assert not request_validator().is_valid({"To": TO, "From": TEST_SENDER, "Body": ""})
    assert not request_validator().is_valid({"To": TO, "From": TEST_SENDER, "Body": "x", "Tag": 1})


# Accepting ---------------------------------------------------------------------------


def test_valid_message_gets_201_resource_in_twilios_shape(twilio: TwilioStandIn) -> None:
    """A good request is answered 201 with a message resource that validates against the
    ``api.v2010.account.message`` schema and describes what was sent; it is recorded."""
    response = _post(twilio, _good_form())

    assert response.status_code == 201, response.text
    resource = response.json()
    message_validator().validate(resource)
    assert SID_PATTERN.fullmatch(resource["sid"])
    assert resource["status"] == "queued"
    assert resource["direction"] == "outbound-api"
    assert resource["account_sid"] == twilio.account_sid
    assert resource["api_version"] == "2010-04-01"
    assert (resource["to"], resource["from"], resource["body"]) == (TO, TEST_SENDER, BODY)
    assert resource["num_media"] == "0"
    assert resource["num_segments"] == "1"  # 61 UCS-2 units (the emoji makes it UCS-2)
    assert resource["messaging_service_sid"] is None
    assert resource["error_code"] is None
    assert resource["uri"] == (
        f"/2010-04-01/Accounts/{twilio.account_sid}/Messages/{resource['sid']}.json"
    )
    assert email.utils.parsedate_to_datetime(resource["date_created"]).tzinfo is not None

    [message] = twilio.messages
    assert (message.sid, message.to, message.from_, message.body) == (
        resource["sid"],
        TO,
        TEST_SENDER,
        BODY,
    )
    [request] = twilio.requests
    assert request.status == 201
    assert request.fields == _good_form()


def test_messaging_service_and_media_stand_in_for_from_and_body(twilio: TwilioStandIn) -> None:
    """The other halves of the conditional rule: a Messaging Service instead of From, and
    media (repeated MediaUrl fields) instead of a Body; an MMS gets an ``MM`` sid."""
    service = "MG" + "c" * 32
    response = _post(
        twilio,
        {
            "To": TO,
            "MessagingServiceSid": service,
            "MediaUrl": ["https://example.com/a.png", "https://example.com/b.png"],
        },
    )

    assert response.status_code == 201, response.text
    resource = response.json()
    message_validator().validate(resource)
    assert re.fullmatch(r"MM[0-9a-f]{32}", resource["sid"])
    assert resource["from"] is None
    assert resource["messaging_service_sid"] == service
    assert resource["num_media"] == "2"


def test_long_plain_text_is_counted_in_concatenated_segments(twilio: TwilioStandIn) -> None:
    """161 GSM-7 characters take two segments (153 per part)."""
    response = _post(twilio, {**_good_form(), "Body": "a" * 161})
    assert response.status_code == 201, response.text
    assert response.json()["num_segments"] == "2"


# Refusing ----------------------------------------------------------------------------

Case = Callable[[TwilioStandIn], httpx.Response]

REFUSALS: dict[str, tuple[Case, int, int]] = {
    "account sid not matching the path pattern": (
        lambda t: _post(t, _good_form(), url=f"{t.url}/2010-04-01/Accounts/AC123/Messages.json"),
        404,
        20404,
    ),
    "another account's sid in the path": (
        lambda t: _post(
            t, _good_form(), url=f"{t.url}/2010-04-01/Accounts/AC{'0' * 32}/Messages.json"
        ),
        404,
        20404,
    ),
    "no credentials": (lambda t: _post(t, _good_form(), auth=None), 401, 20003),
    "wrong auth token": (
        lambda t: _post(t, _good_form(), auth=(t.account_sid, "not-the-token")),
        401,
        20003,
    ),
    "missing To": (lambda t: _post(t, {"From": TEST_SENDER, "Body": BODY}), 400, 21604),
    "missing Body and From": (lambda t: _post(t, {"To": TO}), 400, 21603),
    "missing From": (lambda t: _post(t, {"To": TO, "Body": BODY}), 400, 21603),
    "missing Body": (lambda t: _post(t, {"To": TO, "From": TEST_SENDER}), 400, 21602),
    "empty Body": (lambda t: _post(t, {**_good_form(), "Body": ""}), 400, 21602),
    "unknown field": (lambda t: _post(t, {**_good_form(), "Tags": "x"}), 400, 20001),
    "JSON instead of a form": (lambda t: _post(t, json=_good_form()), 400, 21604),
    "To not a phone number": (lambda t: _post(t, {**_good_form(), "To": "555-0100"}), 400, 21211),
    "From not a phone number": (
        lambda t: _post(t, {**_good_form(), "From": "not a number"}),
        400,
        21212,
    ),
    "MessagingServiceSid off its pattern": (
        lambda t: _post(t, {**_good_form(), "MessagingServiceSid": "MG123"}),
        400,
        20422,
    ),
    "RiskCheck outside its enum": (
        lambda t: _post(t, {**_good_form(), "RiskCheck": "maybe"}),
        400,
        20422,
    ),
    "ValidityPeriod not an integer": (
        lambda t: _post(t, {**_good_form(), "ValidityPeriod": "soon"}),
        400,
        20422,
    ),
    "Body sent twice": (
        lambda t: _post(
            t,
            content=b"To=%2B14155550100&From=%2B15005550006&Body=a&Body=b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        400,
        20422,
    ),
    "Body over 1600 characters": (
        lambda t: _post(t, {**_good_form(), "Body": "a" * 1601}),
        400,
        21617,
    ),
    "PUT instead of POST": (
        lambda t: httpx.put(t.messages_url, auth=(t.account_sid, t.auth_token)),
        405,
        20004,
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_invalid_request_is_refused_with_twilios_error(twilio: TwilioStandIn, case: str) -> None:
    """Each broken request gets Twilio's error body and code, and no message is queued."""
    send, status, code = REFUSALS[case]
    response = send(twilio)

    _assert_twilio_error(response, status=status, code=code)
    assert twilio.messages == []
    [request] = twilio.requests
    assert request.status == status
    assert request.answer == response.json()


def test_bad_credentials_get_twilios_exact_authenticate_error(twilio: TwilioStandIn) -> None:
    """Wrong credentials: 401, a Basic challenge, and Twilio's 20003 body word for word."""
    response = _post(twilio, _good_form(), auth=(twilio.account_sid, "wrong"))

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


# Failure injection ---------------------------------------------------------------------


def test_failed_number_is_refused_permanently_and_others_still_go(twilio: TwilioStandIn) -> None:
    """``fail_number`` refuses that recipient (21610, every time) and no one else."""
    twilio.fail_number(TO)

    for _ in range(2):
        refused = _post(twilio, _good_form())
        body = _assert_twilio_error(refused, status=400, code=21610)
        assert body["message"] == "Attempt to send to unsubscribed recipient"
    other = _post(twilio, {**_good_form(), "To": "+14155550199"})

    assert other.status_code == 201
    assert [m.to for m in twilio.messages] == ["+14155550199"]


def test_outage_answers_5xx_for_the_given_requests_then_recovers(twilio: TwilioStandIn) -> None:
    """``outage(503, requests=2)``: two 503s (code 20503), then service as usual;
    ``outage(500)`` lasts until ``recover()``."""
    twilio.outage(503, requests=2)
    statuses = [_post(twilio, _good_form()) for _ in range(3)]

    _assert_twilio_error(statuses[0], status=503, code=20503)
    _assert_twilio_error(statuses[1], status=503, code=20503)
    assert statuses[2].status_code == 201

    twilio.outage(500)
    for _ in range(3):
        _assert_twilio_error(_post(twilio, _good_form()), status=500, code=20500)
    twilio.recover()
    assert _post(twilio, _good_form()).status_code == 201
    assert len(twilio.messages) == 2


def test_wait_for_times_out_with_what_it_saw(twilio: TwilioStandIn) -> None:
    """``wait_for`` fails (rather than returning short) when too few messages arrive."""
    assert _post(twilio, _good_form()).status_code == 201
    assert len(twilio.wait_for(TO, count=1, timeout=1)) == 1
    with pytest.raises(AssertionError, match="expected 2 message"):
        twilio.wait_for(TO, count=2, timeout=0.2)


# resetflow's provider against the stand-in ----------------------------------------------


def _provider(standin: TwilioStandIn, *, auth_token: str | None = None) -> TwilioProvider:
    return TwilioProvider(
        account_sid=standin.account_sid,
        auth_token=auth_token or standin.auth_token,
        sender=TEST_SENDER,
        base_url=standin.url,
    )


def _message(text: str = BODY, to: str = TO) -> RenderedMessage:
    return RenderedMessage(
        notification="password-reset-token", channel=Channel.SMS, to=to, text=text
    )


def _send(provider: TwilioProvider, message: RenderedMessage) -> SendResult:
    async def go() -> SendResult:
        try:
            return await provider.send(message)
        finally:
            await provider.close()

    return asyncio.run(go())


def test_twilio_provider_request_passes_the_standin_checks(twilio: TwilioStandIn) -> None:
    """TwilioProvider sends a form with exactly To/From/Body and basic auth, Twilio answers
    201, and the provider reports the stand-in's message sid as its message id."""
    result = _send(_provider(twilio), _message())

    [request] = twilio.requests
    assert request.status == 201, request.answer
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form is not None
    assert sorted(name for name, _ in request.form) == ["Body", "From", "To"]
    assert request.fields == {"To": TO, "From": TEST_SENDER, "Body": BODY}
    [message] = twilio.messages
    assert result.provider_message_id == message.sid
    assert SID_PATTERN.fullmatch(message.sid)


def test_twilio_provider_treats_a_refused_number_as_permanent(twilio: TwilioStandIn) -> None:
    """A 21610 refusal is a ProviderError that must not be retried, and its reason names
    the code but not the message (which holds the code the user needs)."""
    twilio.fail_number(TO, message="Refused: {body}")

    with pytest.raises(ProviderError) as raised:
        _send(_provider(twilio), _message())

    assert raised.value.retryable is False
    assert "21610" in str(raised.value)
    assert "123456" not in str(raised.value)


@pytest.mark.parametrize("status", [500, 503])
def test_twilio_provider_treats_an_outage_as_retryable(twilio: TwilioStandIn, status: int) -> None:
    """A 5xx from Twilio is a ProviderError that may be retried."""
    twilio.outage(status)

    with pytest.raises(ProviderError) as raised:
        _send(_provider(twilio), _message())

    assert raised.value.retryable is True
    assert str(status) in str(raised.value)


def test_twilio_provider_treats_bad_credentials_as_permanent(twilio: TwilioStandIn) -> None:
    """A 401 (20003) will not get better by retrying."""
    with pytest.raises(ProviderError) as raised:
        _send(_provider(twilio, auth_token="wrong"), _message())

    assert raised.value.retryable is False
    assert "20003" in str(raised.value)
