"""Building the configured providers: a failover list per channel, one instance per name
(a provider serving both channels, like Courier, is shared)."""

from __future__ import annotations

from resetflow.accounts.models import Channel
from resetflow.clock import Clock
from resetflow.config import Settings
from resetflow.notify.providers.base import Provider
from resetflow.notify.providers.console import ConsoleProvider
from resetflow.notify.providers.courier import CourierProvider
from resetflow.notify.providers.mailbox import MailboxProvider
from resetflow.notify.providers.postmark import PostmarkProvider
from resetflow.notify.providers.smtp import SmtpProvider
from resetflow.notify.providers.twilio import STATUS_CALLBACK_PATH, TwilioProvider
from resetflow.storage.dev_mailbox import DevMailbox


def build_providers(
    settings: Settings, *, mailbox: DevMailbox, clock: Clock
) -> dict[Channel, list[Provider]]:
    """The providers for each channel, in failover order."""
    made: dict[str, Provider] = {}

    def provider(name: str) -> Provider:
        if name not in made:
            made[name] = _make(name, settings, mailbox=mailbox, clock=clock)
        return made[name]

    return {
        Channel.EMAIL: [provider(name) for name in settings.email_provider_chain],
        # RESETFLOW_SMS_PROVIDER=none: no SMS provider (nothing may choose SMS: the
        # allowed regions are none, config.Settings.sms_countries).
        Channel.SMS: [provider(name) for name in settings.sms_provider_chain if name != "none"],
    }


def _make(name: str, settings: Settings, *, mailbox: DevMailbox, clock: Clock) -> Provider:
    if name == "mailbox":
        return MailboxProvider(mailbox=mailbox, clock=clock)
    if name == "console":
        return ConsoleProvider()
    if name == "smtp":
        return SmtpProvider(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
            pool_size=settings.smtp_pool_size,
            idle_seconds=settings.smtp_idle_seconds,
        )
    if name == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token
        return TwilioProvider(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from or None,
            messaging_service_sid=settings.twilio_messaging_service_sid or None,
            now=clock.now,
            base_url=settings.twilio_base_url,
            timeout=settings.provider_timeout_seconds,
            # Only a public https base URL: Twilio cannot reach (nor should it be sent)
            # a plain-http or loopback address.
            status_callback=f"{settings.base_url}{STATUS_CALLBACK_PATH}"
            if settings.twilio_status_callback and settings.base_url.startswith("https://")
            else None,
        )
    if name == "postmark":
        assert settings.postmark_server_token
        return PostmarkProvider(
            server_token=settings.postmark_server_token.get_secret_value(),
            sender=settings.email_from,
            message_stream=settings.postmark_message_stream,
            base_url=settings.postmark_base_url,
            timeout=settings.provider_timeout_seconds,
        )
    if name == "courier":
        assert settings.courier_auth_token
        return CourierProvider(
            auth_token=settings.courier_auth_token.get_secret_value(),
            template=settings.courier_template or None,
            base_url=settings.courier_base_url,
            timeout=settings.provider_timeout_seconds,
        )
    raise ValueError(f"unknown provider {name!r}")
