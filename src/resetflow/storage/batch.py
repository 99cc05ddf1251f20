"""Writes sent together: on PostgreSQL, the inserts of one action as a single statement.

A ``/send-token`` writes three rows whose results nobody reads (the code, the job, the
audit record) and wakes the workers (``pg_notify``). Sent one by one inside BEGIN and
COMMIT, that is six round trips to the server, and on PostgreSQL each round trip, not
the SQL, is what a request costs (docs/performance.md). :meth:`Database.write_batched`
runs such an action with a :class:`WriteBatch` on its connection: :func:`write` and
:func:`notify` then add to the batch instead of sending, and at the end the batch goes
out as one statement, the inserts as data-modifying ``WITH`` clauses and the
notifications in its ``SELECT``::

    WITH w0 AS (INSERT INTO one_time_codes … ON CONFLICT … DO UPDATE …),
         w1 AS (INSERT INTO delivery_jobs …),
         w2 AS (INSERT INTO audit_events …)
    SELECT pg_notify('resetflow_outbox', '')

One statement is one transaction: every row is written, or none, and the workers hear of
the job when it is committed, never before. So the action needs no BEGIN and COMMIT of
its own (its connection is in autocommit): its reads go out as they come, its writes in
one round trip at the end.

Without a batch (SQLite, or any other transaction) :func:`write` runs the statement at
once and :func:`notify` sends ``pg_notify`` on PostgreSQL, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Executable, bindparam, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from resetflow.storage.prepared import Prepared

# Where an open batch is kept: the connection's own ``info`` dictionary (SQLAlchemy's
# place for state that belongs to one connection), for the length of one action.
_KEY = "resetflow_write_batch"


class WriteBatch:
    """Inserts and notifications gathered for one statement (see the module docstring).

    Only inserts whose results nobody reads may join: a batched write has not happened
    yet when :func:`write` returns. Reads in the same action do not see batched rows.
    """

    def __init__(self) -> None:
        self._writes: list[tuple[Prepared, Mapping[str, Any]]] = []
        self._channels: list[str] = []

    def add(self, statement: Prepared, params: Mapping[str, Any]) -> None:
        if not isinstance(statement.statement, Insert):
            raise TypeError("only inserts (and upserts) can join a write batch")
        self._writes.append((statement, params))

    def notify(self, channel: str) -> None:
        if channel not in self._channels:  # PostgreSQL folds repeats in one transaction
            self._channels.append(channel)

    async def send(self, conn: AsyncConnection) -> None:
        """Everything gathered, in one statement on ``conn`` (in autocommit: its own
        transaction)."""
        if not self._writes and not self._channels:
            return
        shape = (
            tuple((id(statement), tuple(params)) for statement, params in self._writes),
            tuple(self._channels),
        )
        combined = _COMBINED.get(shape)
        if combined is None:
            combined = _COMBINED[shape] = Prepared(
                _combine(
                    [(statement.statement, tuple(params)) for statement, params in self._writes],
                    self._channels,
                )
            )
        values = {
            f"w{i}_{name}": value
            for i, (_, params) in enumerate(self._writes)
            for name, value in params.items()
        }
        values.update({f"channel{i}": channel for i, channel in enumerate(self._channels)})
        self._writes, self._channels = [], []
        # A Prepared: in autocommit, straight on asyncpg (storage/prepared.py).
        await combined.execute(conn, values)


# The combined statements, built once per shape (which statements, which parameters, which
# channels): an action sends the same shape every time.
_COMBINED: dict[tuple[Any, ...], Prepared] = {}


def _combine(writes: list[tuple[Executable, tuple[str, ...]]], channels: list[str]) -> Executable:
    clauses = []
    for i, (statement, names) in enumerate(writes):
        assert isinstance(statement, Insert)
        table = statement.table
        # Each insert's values as parameters of their own names (w0_id, w1_id, …): the
        # same columns in several inserts must not share one parameter.
        values = {
            table.c[name]: bindparam(f"w{i}_{name}", type_=table.c[name].type) for name in names
        }
        clauses.append(statement.values(values).cte(f"w{i}"))
    notifications: list[Any] = [
        func.pg_notify(bindparam(f"channel{i}"), literal_column("''")) for i in range(len(channels))
    ]
    return select(*(notifications or [literal_column("1")])).add_cte(*clauses)


def open_batch(conn: AsyncConnection) -> WriteBatch:
    """Start gathering ``conn``'s writes (:meth:`Database.write_batched`)."""
    batch = conn.info[_KEY] = WriteBatch()
    return batch


def close_batch(conn: AsyncConnection) -> None:
    """Stop gathering (whatever was gathered and not sent is dropped)."""
    conn.info.pop(_KEY, None)


async def write(conn: AsyncConnection, statement: Prepared, params: Mapping[str, Any]) -> None:
    """Run an insert whose result nobody reads: now, or with ``conn``'s batch."""
    batch: WriteBatch | None = conn.info.get(_KEY)
    if batch is None:
        await statement.execute(conn, params)
    else:
        batch.add(statement, params)


async def notify(conn: AsyncConnection, channel: str) -> None:
    """``pg_notify(channel, '')`` on PostgreSQL, heard at commit: now (in the caller's
    transaction), or with ``conn``'s batch. Elsewhere nothing."""
    if conn.dialect.name != "postgresql":
        return
    batch: WriteBatch | None = conn.info.get(_KEY)
    if batch is None:
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})
    else:
        batch.notify(channel)
