"""The dev mailbox provider: keeps messages in the dev mailbox (shown at ``/dev/outbox``)
and prints them. Chosen in the settings as ``mailbox`` or by SPEC's name ``outbox``
(config.py); what it records (delivery log, metrics, message ids) keeps SPEC's provider
name ``outbox``, the one host applications and scripts read there.

Printing the message is the delivery itself in dev (the console is the "inbox"), so it
goes to standard output directly, never through logging.
"""

from __future__ import annotations

import sys

from resetflow.accounts.models import Channel
from resetflow.clock import Clock
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, SendResult
from resetflow.storage.dev_mailbox import DevMailbox


class MailboxProvider(Provider):
    name = "outbox"  # SPEC §5 names this provider "outbox"; see the module docstring
    channels = frozenset({Channel.EMAIL, Channel.SMS})

    def __init__(self, *, mailbox: DevMailbox, clock: Clock, echo: bool = True) -> None:
        self._mailbox = mailbox
        self._clock = clock
        self._echo = echo

    async def send(self, message: RenderedMessage) -> SendResult:
        message_id = await self._mailbox.put(
            channel=message.channel.value,
            recipient=message.to,
            subject=message.subject,
            text=message.text,
            html=message.html,
            notification=message.notification,
            now=self._clock.now(),
        )
        if self._echo:
            print_message(message)
        return SendResult(provider_message_id=f"outbox-{message_id}")


def print_message(message: RenderedMessage) -> None:
    heading = f"{message.channel.value} to {message.to}"
    if message.subject:
        heading += f" — {message.subject}"
    print(
        f"\n──── resetflow dev {heading}\n{message.text.rstrip()}\n────",
        file=sys.stdout,
        flush=True,
    )
