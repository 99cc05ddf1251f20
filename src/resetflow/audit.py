"""The audit trail: an append-only record of every step of the flow (R43).

Each record has the UTC time, the event, its outcome, the account (when known), the
client's address and user agent, and a few safe details. Records never hold a code, a
password, a session id or a secret, and contacts only masked (R44). The table refuses
UPDATE and DELETE (database triggers, see migration 0003), and every record is also
written to the structured log as ``audit``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.client import ClientInfo
from resetflow.clock import Clock
from resetflow.storage import batch
from resetflow.storage.database import Database
from resetflow.storage.prepared import Prepared
from resetflow.storage.tables import audit_events

log = logging.getLogger("resetflow.audit")


class AuditEvent(StrEnum):
    SIGN_UP = "sign_up"
    SIGN_IN = "sign_in"
    SIGN_OUT = "sign_out"
    CONTACT_VERIFICATION_SENT = "contact_verification_sent"
    CONTACT_VERIFIED = "contact_verified"
    RESET_REQUESTED = "reset_requested"
    CODE_SENT = "code_sent"
    CODE_ACCEPTED = "code_accepted"
    CODE_REJECTED = "code_rejected"
    LIMIT_HIT = "limit_hit"
    PASSWORD_CHANGED = "password_changed"
    SESSIONS_ENDED = "sessions_ended"
    ROLE_CHANGED = "role_changed"
    # Operator API (R60): every call, and every change it makes, with the token's name.
    ADMIN_CALL = "admin_call"
    ADMIN_CHANGE = "admin_change"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    event: str
    outcome: str
    user_id: str | None
    ip: str
    user_agent: str
    detail: dict[str, Any]


# Built once (parameters passed at execution): most requests append a record.
_INSERT_EVENT = Prepared(insert(audit_events))


def _row(
    event: AuditEvent,
    outcome: str,
    client: ClientInfo,
    user_id: str | None,
    detail: Mapping[str, str | int | None],
    *,
    at: datetime,
) -> dict[str, Any]:
    """One ``audit_events`` row; the client's strings cut to their columns' sizes."""
    return {
        "at": at,
        "event": event.value,
        "outcome": outcome,
        "user_id": user_id,
        "ip": client.ip[:64],
        "user_agent": client.user_agent[:256],
        "detail": json.dumps(detail, separators=(",", ":"), sort_keys=True),
    }


def _log(
    event: AuditEvent,
    outcome: str,
    client: ClientInfo,
    user_id: str | None,
    detail: Mapping[str, str | int | None],
) -> None:
    """The log line of a record (never a secret: details hold ids, masks and reasons)."""
    log.info(
        "audit",
        extra={
            "audit_event": event.value,
            "outcome": outcome,
            "user_id": user_id,
            "ip": client.ip,
            **{f"detail_{k}": v for k, v in detail.items()},
        },
    )


class AuditLog:
    def __init__(self, *, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def record(
        self,
        event: AuditEvent,
        *,
        outcome: str,
        client: ClientInfo | None,
        user_id: str | None = None,
        conn: AsyncConnection | None = None,
        **detail: str | int | None,
    ) -> None:
        """Append one record, in the caller's transaction when ``conn`` is given."""
        client = client or ClientInfo.system()
        values = _row(event, outcome, client, user_id, detail, at=self._clock.now())
        if conn is not None:
            await batch.write(conn, _INSERT_EVENT, values)  # with its batch if one is open
        else:
            async with self._db.write() as own:
                await _INSERT_EVENT.execute(own, values)
        _log(event, outcome, client, user_id, detail)

    async def record_many(
        self,
        event: AuditEvent,
        *,
        outcome: str,
        conn: AsyncConnection,
        entries: Sequence[tuple[str | None, Mapping[str, str | int | None]]],
    ) -> None:
        """Append one system record per ``(user_id, detail)`` of ``entries``, in the
        caller's transaction and in one statement (the delivery worker's batches); each
        is logged as :meth:`record` logs it."""
        client = ClientInfo.system()
        at = self._clock.now()
        await _INSERT_EVENT.execute_many(
            conn,
            [_row(event, outcome, client, user_id, detail, at=at) for user_id, detail in entries],
        )
        for user_id, detail in entries:
            _log(event, outcome, client, user_id, detail)

    async def recent(
        self,
        *,
        limit: int = 100,
        user_id: str | None = None,
        event: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditRecord]:
        """Newest first."""
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(audit_events.c.user_id == user_id)
        if event is not None:
            query = query.where(audit_events.c.event == event)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        async with self._db.read() as conn:
            rows = await conn.execute(query)
            return [
                AuditRecord(
                    id=m["id"],
                    at=m["at"],
                    event=m["event"],
                    outcome=m["outcome"],
                    user_id=m["user_id"],
                    ip=m["ip"],
                    user_agent=m["user_agent"],
                    detail=json.loads(m["detail"]),
                )
                for m in (row._mapping for row in rows)
            ]
