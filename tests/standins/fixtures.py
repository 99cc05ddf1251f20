"""Pytest fixtures for the stand-ins.

A test module imports the ones it uses, e.g.
``from tests.standins.fixtures import twilio_fixture  # noqa: F401``; the fixture is
registered under the name ``twilio``, so that a test's ``twilio`` argument does not
redefine the imported name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.standins.twilio import TwilioStandIn, running_twilio


@pytest.fixture(name="twilio")
def twilio_fixture() -> Iterator[TwilioStandIn]:
    """Twilio's Messages API on loopback, for one fresh account (``.account_sid``,
    ``.auth_token``); ``.url`` is its base URL, ``.settings()`` the resetflow overrides."""
    with running_twilio() as standin:
        yield standin
