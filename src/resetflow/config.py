"""Configuration: one typed object read from ``RESETFLOW_*`` variables and ``.env``.

Nothing is read at import time: :func:`load_settings` is called by ``create_app`` and by
the CLI. A bad value raises :class:`ConfigError` whose message is one line naming the
variable, which the CLI prints as it is.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from resetflow.ratelimit import LimitRules

EMAIL_PROVIDERS = frozenset({"smtp", "postmark", "courier", "outbox", "console"})
SMS_PROVIDERS = frozenset({"twilio", "courier", "outbox", "console"})
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "xxx"})
MIN_SECRET_LENGTH = 32
MIN_WEBHOOK_SECRET_LENGTH = 16


class ConfigError(Exception):
    """Configuration that cannot be used; ``str(error)`` is one line naming the variable."""


class Mode(StrEnum):
    DEV = "dev"
    PROD = "prod"


class Settings(BaseSettings):
    """Every setting resetflow reads. Field ``x`` is the variable ``RESETFLOW_X``."""

    model_config = SettingsConfigDict(
        env_prefix="RESETFLOW_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Mode = Mode.DEV
    data_dir: Path = Path(".resetflow")
    secret_key: SecretStr | None = None
    database_url: str | None = None
    # PostgreSQL, per process: connections kept open, extra ones allowed under load, and
    # how long a request waits for one before it is answered 503. Every process (web
    # process and worker, plus one LISTEN connection each) counts against the server's
    # max_connections (docs/deployment.md).
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=20, ge=0, le=500)
    database_pool_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    redis_url: str | None = None
    # Keys in Redis start with this, so that several deployments can share one server.
    redis_prefix: str = Field(default="resetflow", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str = "http://127.0.0.1:8000"
    allowed_origins: str = ""
    trusted_proxies: str = ""
    default_phone_region: str | None = None

    email_provider: str = "outbox"
    sms_provider: str = "outbox"
    # Failover order within a channel, e.g. "postmark,smtp"; empty: just the provider above.
    email_providers: str = ""
    sms_providers: str = ""
    email_from: str = "resetflow@localhost"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Per process: SMTP sessions open at once (each sends one message at a time), and how
    # long an unused one stays open for the next message.
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    smtp_idle_seconds: float = Field(default=30.0, gt=0, le=3600)
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    # A Messaging Service that picks the sender; one of this and twilio_from is required.
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    postmark_server_token: SecretStr | None = None
    postmark_base_url: str = "https://api.postmarkapp.com"
    postmark_message_stream: str = "outbound"
    courier_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RESETFLOW_COURIER_AUTH_TOKEN", "COURIER_AUTH_TOKEN"),
    )
    courier_template: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RESETFLOW_COURIER_TEMPLATE", "COURIER_TEMPLATE"),
    )
    courier_base_url: str = "https://api.courier.com"
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A directory laid out like notify/templates (<locale>/<notification>/<file>); its
    # files win over the shipped ones, file by file.
    templates_dir: Path | None = None
    # End SMS that carry a code with the WebOTP line "@<host> #<code>" (phones autofill).
    sms_webotp: bool = False

    code_ttl_seconds: int = Field(default=300, ge=30, le=600)
    code_max_tries: int = Field(default=5, ge=1, le=5)
    account_max_failures: int = Field(default=100, ge=1, le=100)
    recovery_pause_seconds: int = Field(default=60, ge=1, le=24 * 3600)
    recovery_max_pause_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    reset_grant_ttl_seconds: int = Field(default=600, ge=30, le=600)
    session_ttl_seconds: int = Field(default=12 * 3600, ge=300, le=30 * 24 * 3600)
    # A sign-up that verified no contact within this many hours is deleted (the worker's
    # housekeeping): an address typed by someone else is not held for ever (issue 11).
    unverified_ttl_hours: int = Field(default=24, ge=1, le=30 * 24)
    password_min_length: int = Field(default=15, ge=8, le=64)
    password_max_length: int = Field(default=256, ge=64, le=1024)
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    # Bearer token for GET /metrics. Unset (or empty): in dev /metrics is open; in prod it
    # is off (404), since its counters tell a known contact from an unknown one (R19).
    metrics_token: SecretStr | None = None
    # A directory shared by every resetflow process of the host (web processes, workers):
    # /metrics then answers the sums over all of them (resetflow/metrics.py). `serve
    # --workers N` makes a temporary one when this is unset.
    metrics_dir: Path | None = None
    # Provider webhooks (web/webhooks.py). Twilio's status callbacks are signed with the
    # auth token; with an https base URL, messages ask Twilio for them. Postmark's are let
    # in by basic auth (user + password) or the X-Resetflow-Webhook-Secret header.
    twilio_status_callback: bool = True
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    postmark_webhook_secret: SecretStr | None = None

    limits_enabled: bool = True
    limit_ip: str = "20/minute;300/hour"
    limit_global: str = "600/second"
    limit_destination: str = "1/minute;3/15 minutes;10/day"
    limit_sms_prefix: str = "20/hour"
    sms_hourly_budget: int = Field(default=500, ge=1, le=1_000_000)
    sms_allowed_countries: str = ""

    ready_max_outbox_lag_seconds: float = Field(default=300.0, gt=0, le=86400)

    inprocess_worker: bool | None = None
    # With the in-process worker: how long a request that writes jobs may wait while the
    # worker is behind (backpressure, notify/outbox.py); 0 turns it off.
    inprocess_backpressure_seconds: float = Field(default=1.0, ge=0, le=30)
    # With the in-process worker: while it is not behind, a random delay of up to this
    # many seconds before each claim, so that a real delivery's cost does not land on the
    # very next request (R20, notify/worker.py); 0 turns it off.
    inprocess_delivery_jitter_seconds: float = Field(default=0.1, ge=0, le=5)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    delivery_max_tries: int = Field(default=4, ge=1, le=20)
    delivery_backoff_seconds: float = Field(default=2.0, ge=0, le=600)
    delivery_lease_seconds: int = Field(default=60, ge=5, le=3600)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("templates_dir", "metrics_dir", mode="before")
    @classmethod
    def _empty_directory_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("no such directory")
        return value.resolve() if value is not None else None

    @field_validator("metrics_dir")
    @classmethod
    def _metrics_dir_absolute(cls, value: Path | None) -> Path | None:
        return value.resolve() if value is not None else None

    @field_validator("metrics_token")
    @classmethod
    def _empty_metrics_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("email_provider")
    @classmethod
    def _known_email_provider(cls, value: str) -> str:
        return _one_of(value, EMAIL_PROVIDERS)

    @field_validator("sms_provider")
    @classmethod
    def _known_sms_provider(cls, value: str) -> str:
        return _one_of(value, SMS_PROVIDERS)

    @field_validator("email_providers")
    @classmethod
    def _known_email_providers(cls, value: str) -> str:
        return _list_of(value, EMAIL_PROVIDERS)

    @field_validator("sms_providers")
    @classmethod
    def _known_sms_providers(cls, value: str) -> str:
        return _list_of(value, SMS_PROVIDERS)

    @field_validator("limit_ip", "limit_global", "limit_destination", "limit_sms_prefix")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        from resetflow.ratelimit import parse_rules

        parse_rules(value)
        return value

    @field_validator("sms_allowed_countries")
    @classmethod
    def _regions_known(cls, value: str) -> str:
        import phonenumbers

        for region in _split(value):
            if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"{region!r} is not an ISO 3166 region code")
        return value.upper()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)
        return value

    # Derived values -----------------------------------------------------------------

    @property
    def is_prod(self) -> bool:
        return self.env is Mode.PROD

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'resetflow.db').resolve()}"

    @property
    def run_worker_in_process(self) -> bool:
        if self.inprocess_worker is not None:
            return self.inprocess_worker
        return not self.is_prod

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def origin_allow_list(self) -> frozenset[str]:
        return frozenset({self.origin, *(o.rstrip("/") for o in _split(self.allowed_origins))})

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(item, strict=False) for item in _split(self.trusted_proxies)
        )

    @property
    def email_provider_chain(self) -> list[str]:
        """The email providers in failover order."""
        return _split(self.email_providers) or [self.email_provider]

    @property
    def sms_provider_chain(self) -> list[str]:
        """The SMS providers in failover order."""
        return _split(self.sms_providers) or [self.sms_provider]

    @property
    def sms_countries(self) -> frozenset[str]:
        """Regions SMS may go to; empty means every region."""
        return frozenset(_split(self.sms_allowed_countries))

    @property
    def limit_rules(self) -> LimitRules:
        return LimitRules(
            per_ip=self.limit_ip,
            global_=self.limit_global,
            per_destination=self.limit_destination,
            per_sms_prefix=self.limit_sms_prefix,
            sms_budget=f"{self.sms_hourly_budget}/hour",
        )

    @property
    def cookie_name(self) -> str:
        # The __Host- prefix makes the browser insist on Secure, Path=/ and no Domain.
        return "__Host-resetflow" if self.is_prod else "resetflow_session"

    def secret(self) -> bytes:
        """The master secret; :func:`load_settings` guarantees it is set."""
        assert self.secret_key is not None
        return self.secret_key.get_secret_value().encode()


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _one_of(value: str, allowed: frozenset[str]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(sorted(allowed))}")
    return value


def _list_of(value: str, allowed: frozenset[str]) -> str:
    """A comma-separated list of distinct names from ``allowed``, normalised."""
    names = [name.lower() for name in _split(value)]
    for name in names:
        if name not in allowed:
            raise ValueError(f"{name!r} is not one of {', '.join(sorted(allowed))}")
        if names.count(name) > 1:
            raise ValueError(f"lists {name} twice")
    return ",".join(names)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``), apply ``overrides``, and check the result.

    In dev a missing secret is generated once into ``data_dir/secret_key`` (mode 0600),
    so that sessions and codes survive restarts. In prod a missing, short or placeholder
    secret is refused.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_first_problem(error)) from None
    _check_providers(settings)
    _check_webhook_secrets(settings)
    if settings.secret_key is None or not settings.secret_key.get_secret_value():
        if settings.is_prod:
            raise ConfigError("RESETFLOW_SECRET_KEY: required when RESETFLOW_ENV=prod")
        settings.secret_key = SecretStr(_dev_secret(settings.data_dir))
    secret = settings.secret_key.get_secret_value()
    if settings.is_prod and (
        secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_LENGTH
    ):
        raise ConfigError(
            f"RESETFLOW_SECRET_KEY: must be at least {MIN_SECRET_LENGTH} random characters, "
            "not a placeholder"
        )
    return settings


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else "settings"
    variable = f"RESETFLOW_{field.upper()}"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message} (got {problem.get('input')!r})"


def _check_providers(settings: Settings) -> None:
    required: dict[str, tuple[str, ...]] = {
        "twilio": ("twilio_account_sid", "twilio_auth_token"),
        "postmark": ("postmark_server_token",),
        "courier": ("courier_auth_token",),
    }
    in_use = dict.fromkeys([*settings.email_provider_chain, *settings.sms_provider_chain])
    for provider in in_use:
        for field in required.get(provider, ()):
            value = getattr(settings, field)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                raise ConfigError(
                    f"RESETFLOW_{field.upper()}: required when the {provider} provider is used"
                )
    if "twilio" in in_use and not (settings.twilio_from or settings.twilio_messaging_service_sid):
        raise ConfigError(
            "RESETFLOW_TWILIO_FROM or RESETFLOW_TWILIO_MESSAGING_SERVICE_SID: one is required "
            "when the twilio provider is used"
        )


def _check_webhook_secrets(settings: Settings) -> None:
    """Webhook credentials: empty means unset; set ones must be long (the endpoints have
    no rate limit to slow guessing down); user and password come together. The values
    never appear in the message."""
    for field in ("postmark_webhook_password", "postmark_webhook_secret"):
        value: SecretStr | None = getattr(settings, field)
        if value is not None and not value.get_secret_value():
            setattr(settings, field, None)
        elif value is not None and len(value.get_secret_value()) < MIN_WEBHOOK_SECRET_LENGTH:
            raise ConfigError(
                f"RESETFLOW_{field.upper()}: must be at least {MIN_WEBHOOK_SECRET_LENGTH} "
                "random characters"
            )
    if not (settings.postmark_webhook_user or "").strip():
        settings.postmark_webhook_user = None
    if (settings.postmark_webhook_user is None) != (settings.postmark_webhook_password is None):
        raise ConfigError(
            "RESETFLOW_POSTMARK_WEBHOOK_USER/RESETFLOW_POSTMARK_WEBHOOK_PASSWORD: set both or "
            "neither"
        )


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: if two processes start at once, the second reads what the first wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret
