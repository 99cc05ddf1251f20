"""Hot statements, compiled once and run straight on the driver when they can be.

A statement run through SQLAlchemy's async engine costs ~120-150 µs of CPU here
(the greenlet hop, the execution context, events, the result set-up) for SQLite work of
a few µs: on the embedded default that was the largest single cost of a
``/send-token`` (docs/performance.md). :class:`Prepared` keeps the statement in SQLAlchemy
Core — one definition, the same SQL on every database — and runs its compiled SQL on the
driver itself, converting values with the same type processors SQLAlchemy would use:

- on a SQLite file whose calls run on the event loop's thread (:mod:`.sqlite_inline`), on
  the ``sqlite3`` connection of the caller's transaction;
- on PostgreSQL, on the asyncpg connection when it is in autocommit
  (:meth:`.Database.write_batched`: /send-token's look-up and its one write), with
  asyncpg's own statement cache. Only there: in a transaction, SQLAlchemy's asyncpg
  adapter sends BEGIN lazily, before its own first statement, so a statement of ours
  could run outside the transaction (:func:`autocommit_asyncpg`). asyncpg's errors are
  raised as SQLAlchemy's (``IntegrityError``, ``DBAPIError``) and a connection lost on
  the way is invalidated (:func:`on_asyncpg`).

Everywhere else (transactions on PostgreSQL, in-memory SQLite, a statement this module
cannot run itself) it is ``conn.execute(statement, params)``.

What the direct path does not do: SQLAlchemy's ``before/after_cursor_execute`` events and
``echo`` logging do not see these statements. ``tests/test_prepared.py`` (SQLite) and
``tests/test_prepared_postgres.py`` run the prepared statements of the hot path both ways
and compare what they read and wrote.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import Dialect, Executable, Numeric
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from resetflow.storage.sqlite_inline import execute_direct, raw_sqlite

Row = Mapping[str, Any]
AsyncpgConnection = Any  # asyncpg.Connection (asyncpg ships no type hints)
_Processor = Callable[[Any], Any] | None
_UNSET = object()


class _DirectForm:
    """What running the statement on ``sqlite3`` needs, for one set of parameter names."""

    __slots__ = ("binds", "columns", "sql")

    def __init__(
        self,
        sql: str,
        binds: list[tuple[str, Any, _Processor]],
        columns: list[tuple[str, _Processor]],
    ) -> None:
        self.sql = sql
        self.binds = binds  # (name, fixed value or _UNSET, bind processor), in ? order
        self.columns = columns  # (key, result processor), in the cursor's column order

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, fixed, process in self.binds:
            value = params[name] if fixed is _UNSET else fixed
            values.append(value if process is None or value is None else process(value))
        return tuple(values)

    def row(self, values: Sequence[Any]) -> dict[str, Any]:
        return {
            key: value if process is None or value is None else process(value)
            for (key, process), value in zip(self.columns, values, strict=True)
        }


class Prepared:
    """A Core statement for the hot path. Parameters are passed at execution, by name."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        # Per kind of database (the SQL differs) and set of parameter names (an INSERT's
        # columns depend on them); None: this statement goes through SQLAlchemy (see
        # _direct_form).
        self._forms: dict[tuple[str, str, tuple[str, ...]], _DirectForm | None] = {}

    async def execute(self, conn: AsyncConnection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; its row count."""
        direct = self._direct(conn, params)
        if direct is None:
            return (await conn.execute(self.statement, dict(params))).rowcount
        raw, form = direct
        if isinstance(raw, sqlite3.Connection):
            count, _ = execute_direct(raw, form.sql, form.arguments(params))
            return count
        status = await on_asyncpg(conn, raw, "execute", form.sql, *form.arguments(params))
        return _rowcount(status)

    async def execute_many(
        self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run a statement that returns no rows once per parameter set (all with the same
        names). Through SQLAlchemy that is one ``executemany``: on asyncpg the sets go in
        one pipelined round trip instead of one round trip each, and so it is directly on
        asyncpg. Directly on SQLite, a plain loop (no round trips there to save)."""
        if not params:
            return
        direct = self._direct(conn, params[0])
        if direct is None:
            await conn.execute(self.statement, [dict(p) for p in params])
            return
        raw, form = direct
        if isinstance(raw, sqlite3.Connection):
            for one in params:
                execute_direct(raw, form.sql, form.arguments(one))
            return
        await on_asyncpg(conn, raw, "executemany", form.sql, [form.arguments(p) for p in params])

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[Row]:
        """Run a SELECT (or a statement with RETURNING); every row, by column key."""
        direct = self._direct(conn, params)
        if direct is None:
            result = await conn.execute(self.statement, dict(params))
            return [dict(row._mapping) for row in result]
        raw, form = direct
        if isinstance(raw, sqlite3.Connection):
            _, found = execute_direct(raw, form.sql, form.arguments(params))
        else:
            found = await on_asyncpg(conn, raw, "fetch", form.sql, *form.arguments(params))
        return [form.row(values) for values in found]

    async def first(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Row | None:
        """The first row, or ``None``; meant for look-ups by a unique key."""
        found = await self.rows(conn, params)
        return found[0] if found else None

    def runs_on_sqlite(self, dialect: Dialect, params: Mapping[str, Any]) -> bool:
        """Whether :meth:`first_on_sqlite` can run this statement with these names."""
        return self._form(dialect, params) is not None

    def first_on_sqlite(
        self, raw: sqlite3.Connection, dialect: Dialect, params: Mapping[str, Any]
    ) -> Row | None:
        """The first row, run on ``raw``, a ``sqlite3`` connection in autocommit and in no
        transaction: the statement is its own read transaction (one snapshot). Only for a
        statement :meth:`runs_on_sqlite` accepts."""
        form = self._form(dialect, params)
        if form is None:
            raise TypeError("this statement goes through SQLAlchemy")
        _, found = execute_direct(raw, form.sql, form.arguments(params))
        return form.row(found[0]) if found else None

    def _direct(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> tuple[sqlite3.Connection | AsyncpgConnection, _DirectForm] | None:
        """The connection and compiled form to run on directly; ``None``: SQLAlchemy's."""
        raw: sqlite3.Connection | AsyncpgConnection | None = inline_sqlite(conn)
        if raw is None:
            raw = autocommit_asyncpg(conn)
            if raw is None:
                return None
        form = self._form(conn.dialect, params)
        return None if form is None else (raw, form)

    def _form(self, dialect: Dialect, params: Mapping[str, Any]) -> _DirectForm | None:
        names = tuple(params)
        key = (dialect.name, dialect.driver, names)
        try:
            return self._forms[key]
        except KeyError:
            form = self._forms[key] = _direct_form(self.statement, dialect, names)
            return form


def inline_sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn`` if its calls run inline, else ``None``.

    ``conn`` must be in a transaction (the direct path joins it).
    """
    if conn.dialect.name != "sqlite":
        return None
    if conn.sync_connection is None:
        return None
    return raw_sqlite(conn.sync_connection.connection.driver_connection)


def autocommit_asyncpg(conn: AsyncConnection) -> AsyncpgConnection | None:
    """The asyncpg connection under ``conn`` if ``conn`` is in autocommit, else ``None``.

    Only there is a statement sent straight to asyncpg what SQLAlchemy would have sent:
    in a transaction, SQLAlchemy's asyncpg adapter sends BEGIN lazily, before its own
    first statement, so one of ours could run before it, outside the transaction. In
    autocommit the adapter never begins one; each statement is its own transaction either
    way. Both signs are checked: the execution option (what ``Database`` sets, on a
    connection that cannot be in a transaction yet) and the adapter's own setting (the
    option is recorded even when SQLAlchemy refuses it because a transaction has begun).
    """
    if conn.dialect.driver != "asyncpg":
        return None
    sync = conn.sync_connection
    if sync is None or sync.invalidated:
        return None
    if sync.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        return None
    pooled = sync.connection
    if not getattr(pooled.dbapi_connection, "autocommit", False):
        return None
    raw: AsyncpgConnection = pooled.driver_connection
    # Closed under us (the server restarted, the backend was killed): SQLAlchemy's path
    # then fails the statement without sending it and invalidates the whole pool.
    return None if raw.is_closed() else raw


async def on_asyncpg(
    conn: AsyncConnection, raw: AsyncpgConnection, method: str, sql: str, *args: Any
) -> Any:
    """``raw.<method>(sql, *args)`` on ``conn``'s asyncpg connection ``raw``, its failures
    raised as SQLAlchemy raises them: a constraint violation as ``IntegrityError``, any
    other database or network failure as another ``DBAPIError`` (answered 503 by the web
    layer). When the connection is lost, ``conn`` is invalidated, so that the pool does not
    hand it out again; so it is when the statement is cancelled or interrupted (its state
    is then unknown), as SQLAlchemy does."""
    try:
        return await getattr(raw, method)(sql, *args)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        kind = next((sa for pg, sa in _ASYNCPG_ERRORS if isinstance(error, pg)), DBAPIError)
        lost = raw.is_closed() or isinstance(error, OSError)
        if lost and not conn.invalidated:
            await conn.invalidate(error)
        raise kind(sql, args, error, connection_invalidated=lost) from error
    except BaseException as error:
        if not isinstance(error, Exception) and not conn.invalidated:
            await conn.invalidate(error)
        raise


# asyncpg's errors as SQLAlchemy's asyncpg dialect translates them (the first that
# matches); anything else is a plain DBAPIError, as there.
_ASYNCPG_ERRORS: tuple[tuple[type[BaseException], type[DBAPIError]], ...] = (
    (asyncpg.IntegrityConstraintViolationError, IntegrityError),
    (asyncpg.SyntaxOrAccessError, ProgrammingError),
    (asyncpg.InternalServerError, InternalError),
    (asyncpg.InterfaceError, InterfaceError),
    (OSError, OperationalError),  # through SQLAlchemy not translated at all
)
# An UPDATE's "UPDATE 3", an INSERT's "INSERT 0 1": the row count SQLAlchemy reports.
_STATUS = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


def _rowcount(status: str) -> int:
    found = _STATUS.match(status or "")
    return int(found.group(1)) if found else -1


def _direct_form(
    statement: Executable, dialect: Dialect, names: tuple[str, ...]
) -> _DirectForm | None:
    if not isinstance(statement, ClauseElement):
        return None
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)
    if (
        compiled.positiontup is None
        # IN (…) lists and literal parameters are rendered per execution: SQLAlchemy's job.
        or compiled.post_compile_params
        or compiled.literal_execute_params
        # Python-side column defaults are computed per execution: SQLAlchemy's job too.
        or compiled.insert_prefetch
        or compiled.update_prefetch
    ):
        return None
    exported = list(getattr(statement, "exported_columns", ()))
    # PostgreSQL's numeric result processors depend on the type the server reports.
    if any(isinstance(column.type, Numeric) for column in exported):
        return None
    binds: list[tuple[str, Any, _Processor]] = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        # A name the caller passes is a parameter; any other bind is a value fixed in the
        # statement (``status == 'queued'``). A missing parameter: let SQLAlchemy say so.
        if name in names:
            fixed = _UNSET
        elif bind.required:
            return None
        else:
            fixed = bind.effective_value
        binds.append((name, fixed, bind.type.dialect_impl(dialect).bind_processor(dialect)))
    columns = [
        (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
        for column in exported
    ]
    return _DirectForm(compiled.string, binds, columns)
