"""The console provider: prints each message to standard output and keeps nothing."""

from __future__ import annotations

import secrets

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, SendResult
from resetflow.notify.providers.mailbox import print_message


class ConsoleProvider(Provider):
    name = "console"
    channels = frozenset({Channel.EMAIL, Channel.SMS})

    async def send(self, message: RenderedMessage) -> SendResult:
        print_message(message)
        return SendResult(provider_message_id=f"console-{secrets.token_hex(8)}")
