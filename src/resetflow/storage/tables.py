"""The schema, in SQLAlchemy Core. Migrations in ``migrations/versions`` must match it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    # Stored normalised (R47) and looked up exactly through these indexes (R48). Only a
    # verified address is unique (uq_users_*_verified below): an unverified one reserves
    # nothing, and the first account to verify it takes it over (migration 0006). The
    # email is empty only on an account that lost it that way and kept a verified phone.
    Column("email", String(254), nullable=True, index=True),
    Column("phone", String(20), nullable=True, index=True),
    Column("password_hash", String(255), nullable=False),
    Column("preference", String(8), nullable=False),
    Column("locale", String(16), nullable=False, server_default="en"),
    Column("email_verified_at", UtcDateTime(), nullable=True),
    Column("phone_verified_at", UtcDateTime(), nullable=True),
    # Consecutive failed codes across all codes and flows (R9, R12).
    Column("code_failures", Integer, nullable=False, server_default="0"),
    Column("code_failure_at", UtcDateTime(), nullable=True),
    # Sessions created before this moment are void (a reset, a contact change): written
    # in the same transaction as the change, so ending them cannot be lost (R27).
    Column("sessions_valid_after", UtcDateTime(), nullable=True),
    # "user", or "admin" for operators (resetflow users grant-admin): /admin pages.
    Column("role", String(16), nullable=False, server_default="user"),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    *(
        Index(
            f"uq_users_{column}_verified",
            column,
            unique=True,
            sqlite_where=text(f"{column}_verified_at IS NOT NULL"),
            postgresql_where=text(f"{column}_verified_at IS NOT NULL"),
        )
        for column in ("email", "phone")
    ),
)

one_time_codes = Table(
    "one_time_codes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(32), nullable=False),
    # The browser-side reset attempt this code belongs to (R6): sha256 of the attempt id.
    Column("attempt_hash", String(64), nullable=False),
    Column("code_mac", LargeBinary(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("failed_tries", Integer, nullable=False, server_default="0"),
    Column("consumed_at", UtcDateTime(), nullable=True),
    Column("grant_used_at", UtcDateTime(), nullable=True),
    # One live code per account and purpose: issuing a new one replaces the old (R6).
    UniqueConstraint("user_id", "purpose", name="uq_one_time_codes_user_purpose"),
)

delivery_jobs = Table(
    "delivery_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), nullable=True),
    Column("notification", String(64), nullable=False),
    Column("locale", String(16), nullable=False),
    # queued | sending | sent | delivered | failed | undeliverable
    Column("status", String(16), nullable=False),
    # The rendering context and routes, encrypted; erased once sent or given up (SPEC §5).
    Column("sealed_payload", LargeBinary, nullable=True),
    Column("route_index", Integer, nullable=False, server_default="0"),
    Column("tries", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("channel", String(8), nullable=True),
    Column("provider", String(32), nullable=True),
    Column("provider_message_id", String(128), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_delivery_jobs_due", "status", "next_attempt_at"),
    # Provider webhooks find their job by the provider's message id; the delivery log
    # lists the newest jobs first.
    Index("ix_delivery_jobs_provider_message_id", "provider_message_id"),
    Index("ix_delivery_jobs_created_at", "created_at"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "job_id", String(32), ForeignKey("delivery_jobs.id", ondelete="CASCADE"), nullable=False
    ),
    Column("channel", String(8), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("destination", String(64), nullable=False),
    # sent | failed | retry | skipped | webhook (a provider's report, in ``error``) |
    # interrupted (its worker stopped mid-send: provider "worker", storage/deliveries.py)
    Column("status", String(16), nullable=False),
    Column("provider_message_id", String(128), nullable=True),
    Column("error", String(500), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_delivery_attempts_job", "job_id"),
)

sessions = Table(
    "sessions",
    metadata,
    # sha256 of the opaque id: a leaked table does not hand out live sessions.
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(32), nullable=True, index=True),
    Column("data", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    # Last use, for the idle limit (storage/sessions/base.py); NULL: at created_at.
    Column("last_seen_at", UtcDateTime(), nullable=True),
)

# The dev mailbox's messages (storage/dev_mailbox.py). The table keeps the name it had
# before the dev mailbox got a name of its own ("outbox" now means only the delivery
# queue): renaming it would take a migration on every existing database for no change in
# behaviour.
dev_mailbox = Table(
    "dev_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(8), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(255), nullable=True),
    Column("text", Text, nullable=False),
    Column("html", Text, nullable=True),
    Column("notification", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False, index=True),
    Column("event", String(32), nullable=False, index=True),
    Column("outcome", String(32), nullable=False),
    Column("user_id", String(32), nullable=True, index=True),
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("detail", Text, nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    # sha256 hex of the token (R60): the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
)
