"""Pytest fixtures for the stand-ins.

A test module imports the ones it uses, e.g.
``from tests.standins.fixtures import twilio_fixture  # noqa: F401``; the fixture is
registered under the name ``twilio``, so that a test's ``twilio`` argument does not
redefine the imported name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.standins.courier import CourierStandIn, running_courier
from tests.standins.postmark import PostmarkStandIn, running_postmark
from tests.standins.twilio import TwilioStandIn, running_twilio


@pytest.fixture(name="twilio")
def twilio_fixture() -> Iterator[TwilioStandIn]:
    """Twilio's Messages API on loopback, for one fresh account (``.account_sid``,
    ``.auth_token``); ``.url`` is its base URL, ``.settings()`` the resetflow overrides."""
    with running_twilio() as standin:
        yield standin


@pytest.fixture(name="postmark")
def postmark_fixture() -> Iterator[PostmarkStandIn]:
    """Postmark's Email API on loopback, for one fresh server (``.server_token``, the
    confirmed sender ``.sender``); ``.settings()`` the resetflow overrides."""
    with running_postmark() as standin:
        yield standin


@pytest.fixture(name="courier")
def courier_fixture() -> Iterator[CourierStandIn]:
    """Courier's profile and send API on loopback, for one fresh workspace
    (``.auth_token``); ``.settings()`` the resetflow overrides."""
    with running_courier() as standin:
        yield standin
