"""Courier profiles: with Courier among the providers (either channel), the account's
profile (``email``, ``phone_number``, ``name``, ``custom.preference``) is merged into Courier
by a durable ``courier-profile`` job enqueued with the change itself: at sign-up, at a
completed contact change and at a preference change (a verification changes none of the
profile's fields), one merge per change: a change while the user's job still waits
replaces its snapshot, and a user's jobs merge one at a time, in order, the account as it
is then. Sends only address ``to.user_id`` (with the address pinned) and never merge a
profile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import Channel
from resetflow.clock import FrozenClock
from resetflow.config import Settings
from resetflow.services import Services, build_services
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from tests.conftest import LiveApp
from tests.standins.courier import CourierStandIn, RecordedRequest
from tests.standins.fixtures import courier_fixture  # noqa: F401
from tests.support.flow import (
    PASSWORD,
    create_verified_account,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)

NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"
PROFILE = "courier-profile"


def _profile(preference: str) -> dict[str, object]:
    return {
        "email": EMAIL,
        "phone_number": PHONE,
        "name": NAME,
        "custom": {"preference": preference},
    }


def _merges(courier: CourierStandIn, user_id: str, count: int) -> list[RecordedRequest]:
    """The profile merges for ``user_id``, once there are ``count`` answered ones."""
    deadline = time.monotonic() + 15
    while True:
        merges = [r for r in courier.requests if r.path == f"/profiles/{user_id}"]
        if len([r for r in merges if r.status == 200]) >= count:
            return merges
        assert time.monotonic() < deadline, f"merges so far: {merges}"
        time.sleep(0.05)


def _jobs(settings: Settings, user_id: str) -> list[tuple[DeliveryJob, list[DeliveryAttempt]]]:
    """The user's ``courier-profile`` jobs with their attempts, once all have finished."""

    async def read() -> list[tuple[DeliveryJob, list[DeliveryAttempt]]]:
        services = build_services(settings)
        try:
            deadline = time.monotonic() + 15
            while True:
                async with services.database.read() as conn:
                    repo = DeliveryRepository(conn)
                    jobs = await repo.list_jobs(user_id=user_id)
                    log = [
                        (j, await repo.attempts(j.id)) for j in jobs if j.notification == PROFILE
                    ]
                if jobs and all(job.status in ("sent", "failed") for job in jobs):
                    return log
                assert time.monotonic() < deadline, f"jobs still pending: {jobs}"
                await asyncio.sleep(0.05)
        finally:
            await services.close()

    return asyncio.run(read())


def _sign_in(client: httpx.Client) -> None:
    answer = client.post("/login", json={"email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 200, answer.text


def test_sign_up_merges_the_profile_once_as_a_job_of_its_own(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    # Courier only for SMS: the profile is merged all the same.
    app = live_app(**courier.settings(channels=("sms",)))
    user_id = create_verified_account(app.settings, name=NAME, email=EMAIL, phone=PHONE)

    [merge] = _merges(courier, user_id, 1)
    assert (merge.method, merge.status) == ("POST", 200)
    assert merge.headers["authorization"] == f"Bearer {courier.auth_token}"
    assert merge.json == {"profile": _profile("email")}
    assert courier.profiles == {user_id: _profile("email")}
    [(job, attempts)] = _jobs(app.settings, user_id)
    assert (job.status, job.channel, job.provider) == ("sent", "email", "courier")
    assert [(a.channel, a.provider, a.status) for a in attempts] == [("email", "courier", "sent")]
    assert courier.sends() == []


def test_preference_change_merges_the_new_preference(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    app = live_app(**courier.settings(channels=("email",)))
    user_id = create_verified_account(app.settings, name=NAME, email=EMAIL, phone=PHONE)
    _merges(courier, user_id, 1)

    with app.client() as client:
        _sign_in(client)
        done = client.post("/account/preference", json={"preference": "sms"})
        assert done.status_code == 200, done.text
    first, second = _merges(courier, user_id, 2)
    assert first.json == {"profile": _profile("email")}
    assert second.json == {"profile": _profile("sms")}
    assert courier.profiles[user_id]["custom"] == {"preference": "sms"}
    assert [job.status for job, _ in _jobs(app.settings, user_id)] == ["sent", "sent"]


def test_reset_send_addresses_the_user_id_and_merges_no_profile(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    app = live_app(**courier.settings(channels=("email",)))
    user_id = create_verified_account(app.settings, name=NAME, email=EMAIL, phone=PHONE)
    _merges(courier, user_id, 1)
    before = len(courier.requests)

    with app.client() as client:
        answer = client.post("/send-token", json={"email": EMAIL})
        assert answer.status_code == 202, answer.text
        courier.wait_for(EMAIL)
    after = courier.requests[before:]
    assert [r.path for r in after] == ["/send"]
    [send] = after
    assert send.json["message"]["to"] == {"user_id": user_id, "email": EMAIL}
    assert send.headers["idempotency-key"].endswith("-email")
    assert len(send.headers["idempotency-key"]) == len("0" * 32 + "-email")


def test_a_retryable_merge_failure_is_retried_with_backoff(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    app = live_app(**courier.settings(channels=("email",)))
    courier.outage(503, requests=1)
    user_id = create_verified_account(app.settings, name=NAME, email=EMAIL, phone=PHONE)

    failed, merged = _merges(courier, user_id, 1)
    assert (failed.status, merged.status) == (503, 200)
    [(job, attempts)] = _jobs(app.settings, user_id)
    assert job.status == "sent"
    assert [(a.provider, a.status) for a in attempts] == [("courier", "retry"), ("courier", "sent")]
    assert attempts[0].error == "courier: Courier profile merge 503 api_error"


def test_a_permanent_merge_failure_fails_the_job_with_the_reason(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    app = live_app(**courier.settings(channels=("email",)))
    courier.auth_token = "pk_test_rotated"  # resetflow's token no longer works: 401
    user_id = create_verified_account(app.settings, name=NAME, email=EMAIL, phone=PHONE)

    [(job, attempts)] = _jobs(app.settings, user_id)
    assert job.status == "failed"
    assert job.last_error == "courier: Courier profile merge 401 authentication_error"
    assert [(a.provider, a.status) for a in attempts] == [("courier", "failed")]


def _drained(client: httpx.Client) -> None:
    for _ in range(300):
        if client.get("/readyz").json()["outbox_pending"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the outbox did not drain")


def test_each_profile_change_is_merged_exactly_once(
    live_app: Callable[..., LiveApp], courier: CourierStandIn
) -> None:
    """Sign-up, the contact's verification, then an email change: two changes to what
    Courier holds (verifying changes none of its fields), so two merges, not one per job
    that happened to be written."""
    app = live_app(**courier.settings(channels=("sms",)))
    new_email = "ada.lovelace@example.org"
    with app.client() as client:
        sign_up_verified(client, name=NAME, email=EMAIL, phone=PHONE)
        _drained(client)
        _sign_in(client)
        asked = client.post(
            "/account/contact", json={"channel": "email", "value": new_email, "password": PASSWORD}
        )
        assert asked.status_code == 202, asked.text
        message = wait_for_dev_message(client, to=new_email, notification="verify-contact")
        done = client.post("/account/confirm-contact", json={"token": find_code(message["text"])})
        assert done.status_code == 200, done.text
        _drained(client)
    merges = [r for r in courier.requests if r.path.startswith("/profiles/")]
    assert [m.json for m in merges] == [
        {"profile": _profile("email")},
        {"profile": {**_profile("email"), "email": new_email}},
    ]
    [user_id] = courier.profiles
    assert courier.profiles[user_id]["email"] == new_email


@pytest.fixture
def queued_settings(
    make_settings: Callable[..., Settings], database_url: str, courier: CourierStandIn
) -> Settings:
    """No worker of its own: the tests run one when they choose to."""
    return make_settings(
        database_url=database_url, inprocess_worker=False, **courier.settings(channels=("email",))
    )


def _profile_jobs(services: Services, user_id: str) -> Any:
    async def read() -> list[DeliveryJob]:
        async with services.database.read() as conn:
            jobs = await DeliveryRepository(conn).list_jobs(user_id=user_id)
        return [job for job in jobs if job.notification == PROFILE]

    return read()


def test_changes_while_a_profile_job_waits_are_one_merge_of_the_last(
    queued_settings: Settings, courier: CourierStandIn
) -> None:
    """A profile job not yet taken by a worker gets the newer snapshot instead of a
    second job beside it (SQLite and PostgreSQL)."""
    user_id = create_verified_account(queued_settings, name=NAME, email=EMAIL, phone=PHONE)

    async def run() -> list[DeliveryJob]:
        services = build_services(queued_settings)
        try:
            for preference in (Channel.SMS, Channel.EMAIL, Channel.SMS):
                await services.contact_change.set_preference(user_id=user_id, preference=preference)
            queued = await _profile_jobs(services, user_id)
            await services.worker.drain()
            return queued
        finally:
            await services.close()

    queued = asyncio.run(run())
    assert [job.status for job in queued] == ["queued"]
    merges = [r for r in courier.requests if r.path.startswith("/profiles/")]
    assert [m.json for m in merges] == [{"profile": _profile("sms")}]


def test_an_older_profile_never_lands_after_a_newer_one(
    queued_settings: Settings, courier: CourierStandIn
) -> None:
    """While a user's profile job is in flight at another worker, a newer one waits; and
    what lands last is the account as it is now (SQLite and PostgreSQL)."""
    clock = FrozenClock(datetime.now(UTC))
    user_id = create_verified_account(
        queued_settings, name=NAME, email=EMAIL, phone=PHONE, clock=clock
    )

    async def run() -> tuple[list[RecordedRequest], list[DeliveryJob]]:
        services = build_services(queued_settings, clock=clock)
        try:
            # The sign-up's job is taken by a worker elsewhere, still at work on it.
            async with services.database.write() as conn:
                [_held] = await DeliveryRepository(conn).claim_due(
                    owner="elsewhere", now=clock.now(), lease_seconds=60, limit=10
                )
            clock.advance(1)
            await services.contact_change.set_preference(user_id=user_id, preference=Channel.SMS)
            await services.worker.drain()
            early = [r for r in courier.requests if r.path.startswith("/profiles/")]
            # That worker died: its lease runs out, and the jobs are done in order.
            clock.advance(61)
            for _ in range(5):
                await services.worker.drain()
                clock.advance(2)
            return early, await _profile_jobs(services, user_id)
        finally:
            await services.close()

    early, jobs = asyncio.run(run())
    assert early == []  # the newer job waited for the one in flight
    assert [job.status for job in jobs] == ["sent", "sent"]
    merges = [r for r in courier.requests if r.path.startswith("/profiles/")]
    assert merges and all(m.json == {"profile": _profile("sms")} for m in merges)
    assert courier.profiles[user_id]["custom"] == {"preference": "sms"}
