"""Pytest fixtures for the stand-ins. Import the ones a module uses:

    from tests.standins.fixtures import twilio  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.standins.twilio import TwilioStandIn, running_twilio


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    """Twilio's Messages API on loopback, for one fresh account (``.account_sid``,
    ``.auth_token``); ``.url`` is its base URL, ``.settings()`` the resetflow overrides."""
    with running_twilio() as standin:
        yield standin
