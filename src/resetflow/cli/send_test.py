"""``send-test``: send a test message through the configured provider(s) of a channel.

It goes straight to each provider (not through the outbox, so no worker is needed and
nothing is retried) and reports what the provider answered: its message id, or why it
refused. The message is the ``test-message`` notification, which carries no code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Annotated

import typer

from resetflow.accounts.contacts import ContactError, normalise_email, normalise_phone
from resetflow.accounts.models import Channel
from resetflow.cli.users import run_with_services
from resetflow.crypto import new_token
from resetflow.notify.messages import Notification
from resetflow.notify.providers.base import ProviderError
from resetflow.notify.providers.registry import build_providers
from resetflow.services import Services, make_renderer


@dataclass(frozen=True, slots=True)
class Outcome:
    provider: str
    message_id: str | None = None
    error: str | None = None


def send_test(
    channel: Annotated[Channel, typer.Option(help="email or sms.")],
    to: Annotated[str, typer.Option(help="Email address, or mobile number in +... form.")],
    locale: Annotated[str, typer.Option(help="Language of the test message.")] = "en",
) -> None:
    """Send a test message through the channel's configured provider(s), directly.

    Prints each provider's message id or error; exits 1 when one failed. The message
    carries no code."""

    async def work(services: Services) -> list[Outcome] | str:
        settings = services.settings
        try:
            recipient = (
                normalise_email(to)
                if channel is Channel.EMAIL
                else normalise_phone(to, default_region=settings.default_phone_region)
            )
        except ContactError as error:
            return str(error)
        message = make_renderer(settings).render(
            Notification.TEST_MESSAGE,
            channel=channel,
            to=recipient,
            locale=locale,
            context={
                "base_url": settings.base_url,
                "sent_at": services.clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            },
            idempotency_key=f"send-test-{new_token()}",
        )
        # Fresh provider objects for this channel alone, as the settings configure it.
        providers = build_providers(settings, mailbox=services.mailbox, clock=services.clock)
        outcomes: list[Outcome] = []
        try:
            for provider in providers[channel]:
                try:
                    result = await provider.send(message)
                except ProviderError as error:
                    outcomes.append(Outcome(provider=provider.name, error=str(error)))
                else:
                    outcomes.append(
                        Outcome(provider=provider.name, message_id=result.provider_message_id)
                    )
        finally:
            for provider in {id(p): p for ps in providers.values() for p in ps}.values():
                await provider.close()
        return outcomes

    outcomes = run_with_services(work)
    if isinstance(outcomes, str):
        typer.echo(f"error: --to: {outcomes}", err=True)
        raise typer.Exit(2)
    for outcome in outcomes:
        if outcome.error is None:
            typer.echo(f"sent via {outcome.provider}: message id {outcome.message_id or '-'}")
        else:
            typer.echo(f"failed via {outcome.provider}: {outcome.error}", err=True)
    if not outcomes or any(outcome.error is not None for outcome in outcomes):
        raise typer.Exit(1)
