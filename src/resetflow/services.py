"""Wiring: builds every service from the settings, once, inside ``create_app`` or a CLI
command (never at import time), and closes them again."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from resetflow.accounts.admin import AdminUsers
from resetflow.accounts.contact_change import ContactChangeService
from resetflow.accounts.contact_rules import ContactRules
from resetflow.accounts.passwords import PasswordHasher, PasswordPolicy
from resetflow.accounts.service import AccountService
from resetflow.audit import AuditLog
from resetflow.clock import Clock
from resetflow.config import Settings
from resetflow.crypto import Keyring
from resetflow.flow import FlowKit
from resetflow.metrics import Metrics
from resetflow.notify.delivery_log import DeliveryLog
from resetflow.notify.events import Events
from resetflow.notify.outbox import Outbox
from resetflow.notify.providers.base import Provider
from resetflow.notify.providers.registry import build_providers
from resetflow.notify.sms_guard import SmsGuard
from resetflow.notify.templates import TemplateRenderer, webotp_host
from resetflow.notify.webhooks_out import WebhookSender
from resetflow.notify.worker import DeliveryWorker, WorkerPolicy
from resetflow.ratelimit import RateLimiter, make_storage
from resetflow.recovery.codes import OneTimeCodes
from resetflow.recovery.service import RecoveryService
from resetflow.signin_failures import SignInFailures, make_failure_counts
from resetflow.storage.database import Database
from resetflow.storage.dev_mailbox import DevMailbox
from resetflow.storage.sessions import SessionStore
from resetflow.storage.sessions.redis import RedisSessionStore
from resetflow.storage.sessions.sql import SqlSessionStore


@dataclass
class Services:
    settings: Settings
    clock: Clock
    database: Database
    sessions: SessionStore
    outbox: Outbox
    mailbox: DevMailbox
    accounts: AccountService
    recovery: RecoveryService
    contact_change: ContactChangeService
    worker: DeliveryWorker
    providers: list[Provider]
    metrics: Metrics
    limiter: RateLimiter
    audit: AuditLog
    events: Events  # events for the host app (notify/events.py)
    webhooks: WebhookSender
    # The delivery log for operators, provider webhooks and the readiness/metrics figures.
    delivery_log: DeliveryLog
    # The operator API's and the import's one place for account changes (set below).
    admin_users: AdminUsers = field(init=False)

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()
        await self.webhooks.close()
        await self.sessions.close()
        await self.limiter.close()
        await self.database.close()


def make_renderer(settings: Settings) -> TemplateRenderer:
    """Templates from RESETFLOW_TEMPLATES_DIR first (file by file), then the shipped ones,
    all given RESETFLOW_PRODUCT_NAME as ``product_name``;
    with RESETFLOW_SMS_WEBOTP, SMS codes end with the WebOTP line for the base URL's host."""
    return TemplateRenderer(
        directories=[settings.templates_dir] if settings.templates_dir else None,
        webotp_host=webotp_host(settings.base_url) if settings.sms_webotp else None,
        product_name=settings.product_name,
        reload=not settings.is_prod,
    )


def build_services(settings: Settings, *, clock: Clock | None = None) -> Services:
    clock = clock or Clock()
    database = Database(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
        sqlite_fast_path=settings.sqlite_fast_path,
    )
    limiter = RateLimiter(
        storage=make_storage(settings.redis_url, prefix=settings.redis_prefix),
        rules=settings.limit_rules,
        enabled=settings.limits_enabled,
        signin_failures=SignInFailures(
            make_failure_counts(settings.redis_url, prefix=settings.redis_prefix),
            max_failures=settings.signin_max_failures,
            ttl_seconds=settings.signin_failure_ttl_seconds,
        ),
    )
    keyring = Keyring(settings.secret())
    sessions: SessionStore = (
        RedisSessionStore.from_url(
            settings.redis_url,
            prefix=f"{settings.redis_prefix}:",
            idle_seconds=settings.session_idle_seconds,
        )
        if settings.redis_url
        else SqlSessionStore(database=database, idle_seconds=settings.session_idle_seconds)
    )
    # Courier keeps a profile per person (the tutorial's merge): the outbox queues one
    # when an account's contacts or preference change.
    courier_profiles = "courier" in [*settings.email_provider_chain, *settings.sms_provider_chain]
    outbox = Outbox(keyring=keyring, profile_sync=courier_profiles)
    contacts = ContactRules(
        default_phone_region=settings.default_phone_region, sms_countries=settings.sms_countries
    )
    events = Events(endpoints=settings.webhook_endpoints, keyring=keyring)
    webhooks = WebhookSender(
        events=events,
        database=database,
        clock=clock,
        timeout_seconds=settings.webhook_timeout_seconds,
    )
    mailbox = DevMailbox(database=database)
    hasher = PasswordHasher()
    policy = PasswordPolicy(
        min_length=settings.password_min_length,
        max_length=settings.password_max_length,
        min_guesses=settings.password_min_guesses,
    )
    audit = AuditLog(database=database, clock=clock)
    metrics = Metrics(shared_directory=settings.metrics_dir)
    codes = OneTimeCodes(
        database=database,
        keyring=keyring,
        clock=clock,
        ttl_seconds=settings.code_ttl_seconds,
        max_tries=settings.code_max_tries,
        account_max_failures=settings.account_max_failures,
        pause_seconds=settings.recovery_pause_seconds,
        max_pause_seconds=settings.recovery_max_pause_seconds,
        audit=audit,
        metrics=metrics,
    )
    providers = build_providers(settings, mailbox=mailbox, clock=clock)
    worker = DeliveryWorker(
        database=database,
        outbox=outbox,
        providers=providers,
        renderer=make_renderer(settings),
        clock=clock,
        policy=WorkerPolicy(
            max_tries=settings.delivery_max_tries,
            backoff_seconds=settings.delivery_backoff_seconds,
            lease_seconds=settings.delivery_lease_seconds,
            poll_seconds=settings.worker_poll_seconds,
        ),
        metrics=metrics,
        sms_guard=SmsGuard(limiter=limiter, allowed_regions=settings.sms_countries),
        audit=audit,
        sessions=sessions,
        webhooks=webhooks,
        events=events,
        unverified_ttl=timedelta(hours=settings.unverified_ttl_hours),
    )
    # What the sign-up, recovery and contact-change flows share (flow.py).
    kit = FlowKit(
        database=database,
        codes=codes,
        outbox=outbox,
        hasher=hasher,
        clock=clock,
        audit=audit,
        limiter=limiter,
        base_url=settings.base_url,
        events=events,
    )
    services = Services(
        settings=settings,
        clock=clock,
        database=database,
        sessions=sessions,
        outbox=outbox,
        mailbox=mailbox,
        accounts=AccountService(kit=kit, policy=policy, contacts=contacts),
        recovery=RecoveryService(
            kit=kit,
            policy=policy,
            sessions=sessions,
            grant_ttl_seconds=settings.reset_grant_ttl_seconds,
        ),
        contact_change=ContactChangeService(kit=kit, sessions=sessions, contacts=contacts),
        worker=worker,
        limiter=limiter,
        audit=audit,
        providers=list({id(p): p for ps in providers.values() for p in ps}.values()),
        metrics=metrics,
        events=events,
        webhooks=webhooks,
        delivery_log=DeliveryLog(database=database, clock=clock),
    )
    services.admin_users = AdminUsers(
        database=database,
        sessions=sessions,
        recovery=services.recovery,
        hasher=hasher,
        policy=policy,
        audit=audit,
        clock=clock,
        events=events,
        contacts=contacts,
    )
    return services
