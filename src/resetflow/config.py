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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from resetflow.ratelimit import LimitRules
from resetflow.web.return_to import AllowList

if TYPE_CHECKING:
    from resetflow.notify.events import WebhookEndpoint

# The dev mailbox provider (notify/providers/mailbox.py: messages kept for /dev/outbox).
MAILBOX = "mailbox"
# Old provider names, read as the current ones wherever a provider is named. "outbox" was
# the dev mailbox's name, and is still SPEC's (and the default it documents); "outbox"
# now means only the delivery queue (notify/outbox.py).
PROVIDER_ALIASES = {"outbox": MAILBOX}
EMAIL_PROVIDERS = frozenset({"smtp", "postmark", "courier", MAILBOX, "console"})
SMS_PROVIDERS = frozenset({"twilio", "courier", MAILBOX, "console", "none"})
# In RESETFLOW_SMS_ALLOWED_COUNTRIES' place when RESETFLOW_SMS_PROVIDER=none: a "region"
# no number has, so that every check of where SMS may go refuses them all.
NO_SMS_REGION = "none"
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "xxx"})
MIN_SECRET_LENGTH = 32
MIN_WEBHOOK_SECRET_LENGTH = 16
# Developer providers: they keep messages (codes included) in the database in clear and
# print them. Prod refuses them (R58).
DEV_PROVIDERS = frozenset({MAILBOX, "console"})


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
    database_pool_size: int = Field(default=20, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=500)
    database_pool_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # SQLite only: the inline aiosqlite connection and direct statements (storage/prepared.py).
    sqlite_fast_path: bool = True
    redis_url: str | None = None
    # Keys in Redis start with this, so that several deployments can share one server.
    redis_prefix: str = Field(default="resetflow", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    base_url: str = "http://127.0.0.1:8000"
    allowed_origins: str = ""
    trusted_proxies: str = ""
    # URL prefixes that ?return_to= may send people to after sign-in, sign-up or a reset
    # (web/return_to.py): comma-separated, e.g. "https://app.example.org/". Empty: none.
    return_to_allowed: str = ""
    default_phone_region: str | None = None

    # The dev mailbox unless real providers are configured (SPEC spells it "outbox").
    email_provider: str = MAILBOX
    sms_provider: str = MAILBOX
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

    # Your look (web/theme.py). The name is in page titles and headers and in messages;
    # the logo is an https:// URL or a file under pages_dir; the accent colours buttons
    # and links; pages_dir holds page templates that win over the shipped ones, file by
    # file (as templates_dir does for messages).
    product_name: str = "resetflow"
    logo_url: str | None = None
    accent_color: str = "#2563eb"
    pages_dir: Path | None = None
    # The session cookie's Path; unset: the mount prefix (web/prefix.py), "/" unmounted.
    # A host app whose own pages need the cookie (for /sessions/whoami) sets "/".
    cookie_path: str | None = None

    code_ttl_seconds: int = Field(default=300, ge=30, le=600)
    code_max_tries: int = Field(default=5, ge=1, le=5)
    account_max_failures: int = Field(default=100, ge=1, le=100)
    recovery_pause_seconds: int = Field(default=60, ge=1, le=24 * 3600)
    recovery_max_pause_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    # Consecutive failed sign-ins of one account before its sign-in stops until a reset
    # (or this long without a failure) (R57, resetflow/signin_failures.py).
    signin_max_failures: int = Field(default=100, ge=1, le=100)
    signin_failure_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    reset_grant_ttl_seconds: int = Field(default=600, ge=30, le=600)
    session_ttl_seconds: int = Field(default=12 * 3600, ge=300, le=30 * 24 * 3600)
    # A session unused this long ends; each use slides it, never past session_ttl_seconds.
    session_idle_seconds: int = Field(default=1800, ge=60, le=30 * 24 * 3600)
    # A sign-up that verified no contact within this many hours is deleted (the worker's
    # housekeeping): an address typed by someone else is not held for ever (issue 11).
    unverified_ttl_hours: int = Field(default=24, ge=1, le=30 * 24)
    password_min_length: int = Field(default=15, ge=8, le=64)
    password_max_length: int = Field(default=256, ge=64, le=1024)
    # zxcvbn's estimate of the guesses a password takes; 10^10 is the floor (R56).
    password_min_guesses: float = Field(default=1e10, ge=1e10, le=1e30)
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
    # Events for the host application (notify/events.py, docs/integration.md): POSTed to
    # this URL, signed with this ``whsec_`` secret (Standard Webhooks). https in prod; in
    # dev http too, to a loopback address only.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # More endpoints, each with its own secret and events: a JSON list of
    # {"url": ..., "secret": "whsec_...", "events": ["user.created", ...]} ("events"
    # left out: all). A secret string, so that no error message or repr shows it.
    webhooks: SecretStr | None = None
    # Standard Webhooks recommends 15 to 30 s: the receiver has time to answer.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)

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

    @field_validator(
        "templates_dir", "metrics_dir", "pages_dir", "logo_url", "cookie_path", mode="before"
    )
    @classmethod
    def _empty_directory_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("templates_dir", "pages_dir")
    @classmethod
    def _templates_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("no such directory")
        return value.resolve() if value is not None else None

    @field_validator("product_name")
    @classmethod
    def _product_name_printable(cls, value: str) -> str:
        value = value.strip()
        if not 1 <= len(value) <= 60 or not value.isprintable():
            raise ValueError("must be 1 to 60 printable characters")
        return value

    @field_validator("accent_color")
    @classmethod
    def _accent_is_rrggbb(cls, value: str) -> str:
        value = value.strip().lower()
        if (
            len(value) != 7
            or value[0] != "#"
            or any(c not in "0123456789abcdef" for c in value[1:])
        ):
            raise ValueError("must be a colour written #rrggbb, like #2563eb")
        return value

    @field_validator("cookie_path")
    @classmethod
    def _cookie_path_absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or any(c in value for c in ";, \t\r\n") or "//" in value:
            raise ValueError("must be a path starting with / (no ; , or spaces)")
        return value.rstrip("/") or "/"

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
        names = _list_of(value, SMS_PROVIDERS)
        if "none" in names.split(","):
            raise ValueError("'none' is set as RESETFLOW_SMS_PROVIDER=none, not in a list")
        return names

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

    @field_validator("return_to_allowed")
    @classmethod
    def _return_to_prefixes_parse(cls, value: str) -> str:
        AllowList.from_setting(value)
        return value

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
    def base_path(self) -> str:
        """The path of the base URL without its trailing slash (``/auth``), or ``""``:
        the mount prefix when it is set (web/prefix.py)."""
        return urlsplit(self.base_url).path.rstrip("/")

    @property
    def logo_file(self) -> Path | None:
        """The logo's file when RESETFLOW_LOGO_URL names one under the pages directory."""
        if self.logo_url is None or self.logo_url.startswith("https://") or not self.pages_dir:
            return None
        return (self.pages_dir / self.logo_url).resolve()

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
    def sms_enabled(self) -> bool:
        """False with ``RESETFLOW_SMS_PROVIDER=none`` (an email-only deployment)."""
        return self.sms_provider_chain != ["none"]

    @property
    def sms_countries(self) -> frozenset[str]:
        """Regions SMS may go to; empty means every region; with SMS off, none at all."""
        if not self.sms_enabled:
            return frozenset({NO_SMS_REGION})
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

    def cookie_name(self, path: str = "/") -> str:
        """The session cookie's name for a cookie of this ``path``. In prod: ``__Host-``
        (the browser insists on Secure, Path=/ and no Domain) when the path is ``/``;
        under a mount prefix ``__Host-`` cannot be used (a browser refuses a ``__Host-``
        cookie whose Path is not ``/``), so ``__Secure-`` (Secure still enforced by the
        browser; resetflow never sets a Domain either)."""
        if not self.is_prod:
            return "resetflow_session"
        return "__Host-resetflow" if path == "/" else "__Secure-resetflow"

    @property
    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Where events for the host app go (RESETFLOW_WEBHOOK_URL/_SECRET, then each
        entry of RESETFLOW_WEBHOOKS); :class:`ConfigError` naming the variable."""
        return _webhook_endpoints(self)

    def secret(self) -> bytes:
        """The master secret; :func:`load_settings` guarantees it is set."""
        assert self.secret_key is not None
        return self.secret_key.get_secret_value().encode()


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _one_of(value: str, allowed: frozenset[str]) -> str:
    """One provider name from ``allowed`` (or an old name of one), as its current name."""
    value = value.strip().lower()
    if PROVIDER_ALIASES.get(value, value) not in allowed:
        raise ValueError(f"must be one of {_provider_names(allowed)}")
    return PROVIDER_ALIASES.get(value, value)


def _list_of(value: str, allowed: frozenset[str]) -> str:
    """A comma-separated list of distinct provider names from ``allowed`` (or old names of
    them), normalised to their current names."""
    typed = [name.lower() for name in _split(value)]
    names = [PROVIDER_ALIASES.get(name, name) for name in typed]
    for name, as_typed in zip(names, typed, strict=True):
        if name not in allowed:
            raise ValueError(f"{as_typed!r} is not one of {_provider_names(allowed)}")
        if names.count(name) > 1:
            raise ValueError(f"lists {name} twice")
    return ",".join(names)


def _provider_names(allowed: frozenset[str]) -> str:
    """Every name accepted, old ones included: what a message about a bad value lists."""
    old = [alias for alias, name in PROVIDER_ALIASES.items() if name in allowed]
    return ", ".join(sorted([*allowed, *old]))


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
    settings.webhook_endpoints  # noqa: B018 (parsed here: a bad value stops the start-up)
    _check_logo(settings)
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
    if settings.is_prod:
        _check_no_dev_providers(settings)
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


def _check_no_dev_providers(settings: Settings) -> None:
    """In prod, ``mailbox`` (also spelled ``outbox``) and ``console`` do not exist (R58):
    they store codes in clear and print them. The message names the variable that chose
    one."""
    for channel in ("email", "sms"):
        chain_field = f"{channel}_providers"
        chain = _split(getattr(settings, chain_field))
        field = chain_field if chain else f"{channel}_provider"
        for name in chain or [getattr(settings, field)]:
            if name in DEV_PROVIDERS:
                real = (
                    "smtp, postmark or courier"
                    if channel == "email"
                    else "twilio or courier (or none: no SMS at all)"
                )
                old = [alias for alias, current in PROVIDER_ALIASES.items() if current == name]
                shown = f"{name!r} (also spelled {old[0]!r})" if old else repr(name)
                raise ConfigError(
                    f"RESETFLOW_{field.upper()}: {shown} is a development provider, refused "
                    f"when RESETFLOW_ENV=prod; configure {real}"
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


def _webhook_endpoints(settings: Settings) -> list[WebhookEndpoint]:
    """The event endpoints, checked. Messages name the variable and never show a secret
    (nor the URL, whose path or query may hold a token of the receiver's)."""
    import json

    from resetflow.notify.events import EventType, WebhookEndpoint, decode_secret

    def endpoint(
        variable: str, url: str, secret: str, events: Any = None, *, key_variable: str = ""
    ) -> WebhookEndpoint:
        _check_event_url(variable, url, prod=settings.is_prod)
        try:
            decode_secret(secret)
        except ValueError as error:
            problem = (
                f"{key_variable}: {error}" if key_variable else f"{variable}: the secret {error}"
            )
            raise ConfigError(problem) from None
        wanted: frozenset[EventType] | None = None
        if events is not None:
            known = {event.value for event in EventType}
            if not isinstance(events, list) or not all(e in known for e in events):
                raise ConfigError(
                    f"{variable}: events must be a list of {', '.join(sorted(known))}"
                )
            wanted = frozenset(EventType(e) for e in events)
        return WebhookEndpoint(url=url, secret=SecretStr(secret), events=wanted)

    found: list[WebhookEndpoint] = []
    url = (settings.webhook_url or "").strip()
    secret = settings.webhook_secret.get_secret_value().strip() if settings.webhook_secret else ""
    if url and not secret:
        raise ConfigError("RESETFLOW_WEBHOOK_SECRET: required when RESETFLOW_WEBHOOK_URL is set")
    if secret and not url:
        raise ConfigError("RESETFLOW_WEBHOOK_URL: required when RESETFLOW_WEBHOOK_SECRET is set")
    if url:
        found.append(
            endpoint("RESETFLOW_WEBHOOK_URL", url, secret, key_variable="RESETFLOW_WEBHOOK_SECRET")
        )
    raw = settings.webhooks.get_secret_value().strip() if settings.webhooks else ""
    if raw:
        variable = "RESETFLOW_WEBHOOKS"
        try:
            entries = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{variable}: must be a JSON list of endpoints") from None
        if not isinstance(entries, list):
            raise ConfigError(f"{variable}: must be a JSON list of endpoints")
        for number, entry in enumerate(entries, start=1):
            where = f"{variable} (entry {number})"
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("url"), str)
                or not isinstance(entry.get("secret"), str)
                or set(entry) - {"url", "secret", "events"}
            ):
                raise ConfigError(f'{where}: must be {{"url", "secret", "events"?}}')
            found.append(
                endpoint(where, entry["url"].strip(), entry["secret"].strip(), entry.get("events"))
            )
    urls = [e.url for e in found]
    if len(set(urls)) != len(urls):
        raise ConfigError("RESETFLOW_WEBHOOKS: the same URL is configured twice")
    return found


def _check_event_url(variable: str, url: str, *, prod: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{variable}: must be an absolute https URL")
    if parts.scheme == "http":
        if prod:
            raise ConfigError(f"{variable}: must be https when RESETFLOW_ENV=prod")
        if not _is_loopback(parts.hostname):
            raise ConfigError(
                f"{variable}: plain http is allowed only to a loopback address (dev); use https"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOGO_SUFFIXES = frozenset({".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp", ".avif"})


def _check_logo(settings: Settings) -> None:
    """RESETFLOW_LOGO_URL: an https:// URL, or a picture file under RESETFLOW_PAGES_DIR
    (served by resetflow at /static/logo)."""
    value = settings.logo_url
    if value is None:
        return
    problem = (
        "RESETFLOW_LOGO_URL: must be an https:// URL or an image file under RESETFLOW_PAGES_DIR"
    )
    if value.startswith("https://"):
        parts = urlsplit(value)
        if not parts.netloc or any(c in value for c in " '\"<>;,"):
            raise ConfigError(f"{problem} (got {value!r})")
        return
    if settings.pages_dir is None or "://" in value:
        raise ConfigError(f"{problem} (got {value!r})")
    path = (settings.pages_dir / value).resolve()
    if (
        not path.is_relative_to(settings.pages_dir)
        or not path.is_file()
        or path.suffix.lower() not in LOGO_SUFFIXES
    ):
        raise ConfigError(f"{problem} (got {value!r})")


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
