"""The dev mailbox: the ``mailbox`` provider, also chosen by its old name ``outbox`` (the
name SPEC's settings table uses), whose messages are shown at ``/dev/outbox`` (and
``/dev/mailbox``). Prod refuses it under both names: tests/test_prod_hardening.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from resetflow.accounts.models import Channel
from resetflow.clock import Clock
from resetflow.config import ConfigError, load_settings
from resetflow.notify.providers.console import ConsoleProvider
from resetflow.notify.providers.mailbox import MailboxProvider
from resetflow.notify.providers.registry import build_providers
from resetflow.services import build_services
from resetflow.storage.database import Database
from resetflow.storage.dev_mailbox import DevMailbox
from resetflow.storage.tables import delivery_jobs
from tests.conftest import LiveApp
from tests.support.flow import find_code, sign_up, wait_for_dev_message
from tests.support.servers import run


def _providers(**overrides: Any) -> tuple[list[str], list[str], dict[Channel, list[Any]]]:
    settings = load_settings(_env_file=None, **overrides)
    mailbox = DevMailbox(database=Database(f"sqlite+aiosqlite:///{settings.data_dir}/unused.db"))
    providers = build_providers(settings, mailbox=mailbox, clock=Clock())
    return settings.email_provider_chain, settings.sms_provider_chain, providers


@pytest.mark.parametrize("name", ["mailbox", "outbox", "MailBox", " outbox "])
def test_mailbox_and_its_old_name_outbox_both_choose_the_dev_mailbox(
    tmp_path: Path, name: str
) -> None:
    email, sms, providers = _providers(
        data_dir=tmp_path, email_provider=name, sms_providers=f"console,{name}"
    )
    assert (email, sms) == (["mailbox"], ["console", "mailbox"])
    [by_email] = providers[Channel.EMAIL]
    console, by_sms = providers[Channel.SMS]
    assert isinstance(by_email, MailboxProvider) and by_email.name == "outbox"  # SPEC's name
    assert isinstance(console, ConsoleProvider)
    assert by_sms is by_email  # one provider for both channels, as for Courier


def test_the_default_provider_is_the_dev_mailbox(tmp_path: Path) -> None:
    """SPEC's default, ``outbox``, is the dev mailbox under its old name."""
    email, sms, providers = _providers(data_dir=tmp_path)
    assert (email, sms) == (["mailbox"], ["mailbox"])
    assert all(isinstance(p, MailboxProvider) for p in providers[Channel.EMAIL])
    assert all(isinstance(p, MailboxProvider) for p in providers[Channel.SMS])


def test_listing_the_dev_mailbox_under_both_names_is_listing_it_twice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path, _env_file=None, sms_providers="mailbox,outbox")
    assert str(caught.value).startswith("RESETFLOW_SMS_PROVIDERS: lists mailbox twice")


@pytest.mark.parametrize("name", ["mailbox", "outbox"])
def test_either_name_delivers_to_the_dev_mailbox_pages(
    live_app: Callable[..., LiveApp], backend: dict[str, Any], name: str
) -> None:
    """A message sent by the provider chosen under either name is in the dev mailbox, at
    SPEC's /dev/outbox(.json) and at /dev/mailbox(.json) alike, and the delivery log
    names the provider by SPEC's name, ``outbox``, under either setting."""
    app = live_app(email_provider=name, sms_provider=name, **backend)
    with app.client() as client:
        assert sign_up(client, name="Ada").status_code == 201
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        assert find_code(message["text"])
        assert client.get("/dev/mailbox.json").json() == client.get("/dev/outbox.json").json()
        for path in ("/dev/outbox", "/dev/mailbox"):
            shown = client.get(path)
            assert shown.status_code == 200
            assert "<h1>Dev mailbox</h1>" in shown.text and "ada@example.com" in shown.text

    async def providers() -> list[tuple[str | None, str | None]]:
        services = build_services(app.settings)
        try:
            async with services.database.read() as conn:
                rows = await conn.execute(
                    select(delivery_jobs.c.provider, delivery_jobs.c.provider_message_id)
                )
                return [(row.provider, row.provider_message_id) for row in rows]
        finally:
            await services.close()

    # The job is marked sent just after the message is in the mailbox.
    deadline = time.monotonic() + 10
    while (recorded := run(providers())) and recorded[0][0] is None:
        assert time.monotonic() < deadline, recorded
        time.sleep(0.05)
    assert recorded == [("outbox", f"outbox-{message['id']}")]
