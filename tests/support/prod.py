"""Settings of a production configuration for tests: real providers, never the dev
``mailbox`` (alias ``outbox``) and ``console`` ones, which prod refuses (R58).

Nothing here starts a server: a test that sends messages points ``smtp_port`` at its
aiosmtpd sink (the ``smtp`` fixture) and ``twilio_base_url`` at the Twilio stand-in;
one that sends nothing may leave them at these addresses, which are only dialled when a
message goes out.
"""

from __future__ import annotations

from typing import Any

PROD_SECRET = "s" * 48


def prod_settings(**overrides: Any) -> dict[str, Any]:
    """Keyword settings for ``live_app``/``make_settings`` of a prod deployment."""
    values: dict[str, Any] = {
        "env": "prod",
        "secret_key": PROD_SECRET,
        "base_url": "https://auth.example.org",
        "email_provider": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": 2525,
        "sms_provider": "twilio",
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": "t" * 32,
        "twilio_from": "+15005550006",
        "twilio_base_url": "http://127.0.0.1:9",
    }
    values.update(overrides)
    return values


def prod_environment(**overrides: str) -> dict[str, str]:
    """The same as ``RESETFLOW_*`` variables, for a ``python -m resetflow`` process."""
    return {
        f"RESETFLOW_{name.upper()}": str(value)
        for name, value in prod_settings(**overrides).items()
    }
