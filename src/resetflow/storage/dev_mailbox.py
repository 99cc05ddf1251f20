"""The dev mailbox: what the ``mailbox`` provider "sent", shown at ``/dev/outbox``.

Not to be confused with the outbox (notify/outbox.py), the durable queue of delivery
jobs: the dev mailbox is one of the providers that queue's worker delivers to. Its table
keeps its first name, ``dev_outbox`` (storage/tables.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.database import Database
from resetflow.storage.tables import dev_mailbox

# Built once (values passed at execution): every dev-mailbox delivery inserts one.
_INSERT_MESSAGE = insert(dev_mailbox)


@dataclass(frozen=True, slots=True)
class DevMessage:
    id: int
    channel: str
    recipient: str
    subject: str | None
    text: str
    html: str | None
    notification: str
    created_at: datetime


class DevMailbox:
    """Stored in the database so that a worker in another process fills the same box."""

    def __init__(self, *, database: Database) -> None:
        self._db = database

    async def put(
        self,
        *,
        channel: str,
        recipient: str,
        subject: str | None,
        text: str,
        html: str | None,
        notification: str,
        now: datetime,
    ) -> int:
        values = {
            "channel": channel,
            "recipient": recipient,
            "subject": subject,
            "text": text,
            "html": html,
            "notification": notification,
            "created_at": now,
        }

        async def store(conn: AsyncConnection) -> int:
            result = await conn.execute(_INSERT_MESSAGE, values)
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        # Messages of one batch of jobs share one commit on SQLite (the dev mailbox is the
        # embedded default's provider): an insert of our own, nothing to refuse.
        return await self._db.write_coalesced(store)

    async def newest(self, *, limit: int = 50) -> list[DevMessage]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(dev_mailbox).order_by(dev_mailbox.c.id.desc()).limit(limit)
            )
            return [DevMessage(**row._mapping) for row in rows]
