"""``users import FILE`` and ``users import-tutorial``: bringing existing accounts over.

``users import`` reads NDJSON (one JSON object a line) or CSV with a header row (chosen
by the ``.csv`` extension, else by the first character: ``{`` means NDJSON), with the
fields of ``POST /admin/api/v1/users``. It prints one NDJSON result per line (line
number, and the account ``id`` or an ``error`` code) and a summary on stderr, and exits
1 if any line failed. The file is read line by line, never whole.

``users import-tutorial`` reads the tutorial's Redis (``users:<sha3 id>:<email>:<phone>``
keys, each a JSON value ``{user_id, hashed_password, name, email, phone, preference}``)
and imports every account with its unsalted SHA3-256 hash wrapped in Argon2id
(``$resetflow-sha3-argon2id$``): the unsalted hash is never stored. Contacts arrive
unverified; the first sign-in replaces the hash and asks to confirm a contact.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from resetflow.accounts.admin import Actor, ImportSummary
from resetflow.accounts.legacy_hashes import UnsupportedHash, wrap_sha3_hex
from resetflow.accounts.models import Channel
from resetflow.cli.users import run_with_services
from resetflow.errors import MalformedRequest, ResetflowError, UnsupportedPasswordHash
from resetflow.services import Services

MAX_LINE_CHARS = 16 * 1024
BOOLEAN_FIELDS = ("email_verified", "phone_verified")
TRUE = frozenset({"1", "true", "yes", "y", "t"})
FALSE = frozenset({"", "0", "false", "no", "n", "f"})

Line = tuple[int, dict[str, Any] | ResetflowError]


def _is_csv(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".ndjson", ".jsonl", ".json"):
        return False
    with path.open(encoding="utf-8-sig") as handle:
        for raw in handle:
            if raw.strip():
                return not raw.lstrip().startswith("{")
    return False


def ndjson_file(path: Path) -> Iterator[Line]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_CHARS:
                yield number, MalformedRequest(f"The line is longer than {MAX_LINE_CHARS}.")
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                yield number, MalformedRequest("The line is not valid JSON.")
                continue
            if not isinstance(data, dict):
                yield number, MalformedRequest("The line must be a JSON object.")
                continue
            yield number, data


def csv_file(path: Path) -> Iterator[Line]:
    """Rows as import lines: empty cells are left out, the two ``*_verified`` columns
    read as booleans (true/false, yes/no, 1/0). Line numbers are the file's lines."""
    csv.field_size_limit(MAX_LINE_CHARS)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield reader.line_num, MalformedRequest(f"The CSV row cannot be read: {error}.")
                continue
            number = reader.line_num
            if None in row:
                yield number, MalformedRequest("The row has more cells than the header.")
                continue
            item: dict[str, Any] = {}
            problem = None
            for key, value in row.items():
                if value is None or value == "":
                    continue
                if key in BOOLEAN_FIELDS:
                    folded = value.strip().lower()
                    if folded not in TRUE | FALSE:
                        problem = f"{key} must be true or false."
                    item[key] = folded in TRUE
                else:
                    item[key] = value
            yield number, (MalformedRequest(problem) if problem else item)


async def _aiter(lines: Iterator[Line]) -> AsyncIterator[Line]:
    for item in lines:
        yield item


async def _run_import(services: Services, lines: AsyncIterator[Line]) -> ImportSummary:
    summary = ImportSummary()
    actor = Actor(token_name="cli")  # noqa: S106 - a name, not a secret
    out = sys.stdout
    async for result in services.admin_users.import_users(lines, actor=actor):
        summary.add(result)
        out.write(json.dumps(result, separators=(",", ":")) + "\n")
    out.flush()
    return summary


def _report(summary: ImportSummary) -> None:
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(summary.codes.items()))
    typer.echo(
        f"created {summary.created}, already there {summary.exists}, failed {summary.errors}"
        + (f" ({codes})" if codes else ""),
        err=True,
    )
    if summary.errors:
        raise typer.Exit(1)


def import_file(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="NDJSON or CSV.")
    ],
) -> None:
    """Import accounts from NDJSON or CSV (the fields of POST /admin/api/v1/users).

    Each line is reported; a bad line never stops the others, and running the same file
    again creates nothing twice (a line whose email or phone has an account is
    ``exists`` with its id)."""
    lines = csv_file(file) if _is_csv(file) else ndjson_file(file)
    _report(run_with_services(lambda services: _run_import(services, _aiter(lines))))


async def tutorial_lines(redis_url: str, pattern: str) -> AsyncIterator[Line]:
    """The tutorial's accounts as import lines, its SHA3 hashes wrapped in Argon2id."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        number = 0
        async for key in client.scan_iter(match=pattern, count=500):
            number += 1
            kind = await client.type(key)
            if kind == "string":
                raw = await client.get(key)
                try:
                    value = json.loads(raw) if raw else None
                except ValueError:
                    value = None
            elif kind == "hash":
                value = await client.hgetall(key)
            else:
                value = None
            if not isinstance(value, dict):
                yield number, MalformedRequest(f"{key}: not a tutorial user record.")
                continue
            yield number, await _tutorial_user(key, value)
    finally:
        await client.aclose()


async def _tutorial_user(key: str, value: dict[str, Any]) -> dict[str, Any] | ResetflowError:
    # users:<sha3 of phone or email>:<email>:<phone>; the JSON value has the same fields
    # (an absent phone is the string "undefined" in the key and missing in the value).
    parts = key.split(":", 2)
    rest = parts[2] if len(parts) == 3 else ""
    key_email, _, key_phone = rest.rpartition(":")
    email = str(value.get("email") or key_email)
    phone = value.get("phone") or (key_phone if key_phone not in ("", "undefined") else None)
    try:
        wrapped = await asyncio.to_thread(wrap_sha3_hex, str(value.get("hashed_password", "")))
    except UnsupportedHash as error:
        return UnsupportedPasswordHash(fields={"password_hash": str(error)})
    preference = Channel.preferred(value.get("preference")).value
    line: dict[str, Any] = {
        "name": str(value.get("name") or email.partition("@")[0] or "user")[:200],
        "email": email,
        "preference": preference,
        "password_hash": wrapped,
        "email_verified": False,
        "phone_verified": False,
    }
    if phone:
        line["phone"] = str(phone)
    return line


def import_tutorial(
    redis_url: Annotated[
        str, typer.Option("--redis-url", help="The tutorial's Redis, e.g. redis://host:6379/0.")
    ],
    pattern: Annotated[
        str, typer.Option("--pattern", help="Keys to read (SCAN MATCH); the tutorial's.")
    ] = "users:*",
) -> None:
    """Import the tutorial's accounts from its Redis (read only; nothing there changes).

    Passwords keep working: each unsalted SHA3-256 hash is stored only wrapped in
    Argon2id and replaced by a plain Argon2id hash at the first sign-in. Contacts arrive
    unverified: the first sign-in asks to confirm one."""
    _report(
        run_with_services(
            lambda services: _run_import(services, tutorial_lines(redis_url, pattern))
        )
    )
