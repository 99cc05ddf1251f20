"""The operator API: ``/admin/api/v1/...`` with ``Authorization: Bearer <token>`` (R60).

- No live token in the database (none made, or all revoked): the whole tree answers
  ``404 not_found``, exactly like a path that does not exist.
- Otherwise a missing, unknown or revoked token: ``401 admin_token_invalid`` with
  ``WWW-Authenticate: Bearer``.
- The API never reads or writes the session cookie (the session middleware skips this
  tree, web/sessions.py), so a browser's cookies cannot drive it; and a browser cannot
  send ``Authorization`` cross-site without a CORS preflight, which resetflow never
  answers. So it needs none of the browser checks (CSRF token, ``Origin``).
- Every call is in the audit trail (``admin_call``) with the token's *name*, the method,
  the route and the status; the changes it makes are recorded as ``admin_change`` in
  their own transaction. The token is never logged.

JSON bodies only (``415`` otherwise), validated strictly (``422`` with ``fields``);
the import takes NDJSON, processed as it streams in, and answers NDJSON.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from resetflow.accounts.admin import Actor, AdminUsers, user_json
from resetflow.accounts.admin_schemas import (
    AdminNewUser,
    AdminUserList,
    AdminUserOut,
    AdminUserPatch,
    ImportResult,
)
from resetflow.audit import AuditEvent
from resetflow.errors import (
    AdminTokenInvalid,
    InvalidInput,
    MalformedRequest,
    ResetflowError,
    UnsupportedMediaType,
)
from resetflow.storage.admin_tokens import AdminTokenRepository
from resetflow.web.edge import client_of, services_of
from resetflow.web.error_json import http_status
from resetflow.web.inputs import field_messages

PREFIX = "/admin/api/v1"
NDJSON = "application/x-ndjson"
# An import line longer than this is refused (and the rest of the body still read).
MAX_LINE_BYTES = 16 * 1024
SPOOL_BYTES = 4 * 1024 * 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token (`admin_token_invalid`)."},
    404: {"description": "No such account (`user_not_found`)."},
    422: {"description": "Invalid input (`invalid_input`, `weak_password`, ...)."},
}


# FastAPI's own scheme reads the header and puts "bearer" in /openapi.json's
# securitySchemes; auto_error=False because a missing token is ours to answer (404/401).
_bearer = HTTPBearer(
    auto_error=False, description="An admin token (`resetflow admin-tokens create`)."
)


async def admin_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """The calling token's name, or 404 (no live token at all) / 401 (not a valid one)."""
    services = services_of(request)
    async with services.database.read() as conn:
        repo = AdminTokenRepository(conn)
        if not await repo.any_active():
            raise HTTPException(404)
        name = await repo.name_for(credentials.credentials.strip()) if credentials else None
    if name is None:
        raise AdminTokenInvalid()
    actor = Actor(token_name=name, client=client_of(request))
    request.scope["state"]["admin_actor"] = actor
    async with services.database.write() as conn:
        await AdminTokenRepository(conn).touch(name, now=services.clock.now())
    return actor


Caller = Annotated[Actor, Depends(admin_actor)]
router = APIRouter(prefix=PREFIX, tags=["operator API"], responses=_ERRORS)


def admin_users(request: Request) -> AdminUsers:
    return services_of(request).admin_users


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _json(request: Request, model: type[Any]) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("Send application/json.")
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise MalformedRequest("The body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(fields=field_messages(error)) from None


async def _audit_call(request: Request, actor: Actor, status: int, user_id: str | None) -> None:
    route = request.scope.get("route")
    await services_of(request).audit.record(
        AuditEvent.ADMIN_CALL,
        outcome=str(status),
        client=actor.client,
        user_id=user_id,
        admin_token=actor.token_name,
        method=request.method,
        route=getattr(route, "path", PREFIX),
    )


async def _call(request: Request, actor: Actor, user_id: str | None, work: Any) -> Response:
    """Run ``work`` and record the call (whatever its outcome) with the token's name."""
    try:
        response: Response = await work
    except ResetflowError as error:
        await _audit_call(request, actor, http_status(error), user_id)
        raise
    await _audit_call(request, actor, response.status_code, user_id)
    return response


@router.post(
    "/users", status_code=201, response_model=AdminUserOut, openapi_extra=_body(AdminNewUser)
)
async def create_user(request: Request, actor: Caller) -> Response:
    """Create an account with a password or an imported hash. `409 contact_taken` when
    the email or phone has an account."""

    async def work() -> Response:
        data = await _json(request, AdminNewUser)
        user = await admin_users(request).create(data, actor=actor)
        return JSONResponse(user_json(user), status_code=201)

    return await _call(request, actor, None, work())


@router.get("/users", response_model=AdminUserList)
async def find_users(
    request: Request,
    actor: Caller,
    email: Annotated[str | None, Query(max_length=254)] = None,
    phone: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """Exact look-up by normalised email or phone (give one): `{"users": [...]}`, with
    at most one account."""

    async def work() -> Response:
        if (email is None) == (phone is None):
            raise InvalidInput(fields={"email": "Give either email or phone."})
        found = await admin_users(request).find(email=email, phone=phone)
        return JSONResponse({"users": [user_json(user) for user in found]})

    return await _call(request, actor, None, work())


@router.post(
    "/users/import",
    response_model=ImportResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {NDJSON: {"schema": AdminNewUser.model_json_schema()}},
        }
    },
)
async def import_users(request: Request, actor: Caller) -> Response:
    """NDJSON in, one user a line (the fields of `POST /users`); NDJSON out, one result a
    line in order: `{"line", "id", "status": "created"|"exists"}` or `{"line", "error",
    "message"}`. The body is read and written as it arrives; the answer follows once
    the body has been read. Re-running a file creates nothing twice."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != NDJSON:
        await _audit_call(request, actor, 415, None)
        raise UnsupportedMediaType(f"Send {NDJSON}.")
    service = admin_users(request)
    # Results are spooled while the body is read and sent once it has been: the usual
    # clients (curl, httpx, requests) send their whole body before reading the answer,
    # so answering while still reading would fill both directions' buffers and stall a
    # large import. The body is still processed as it arrives, a batch at a time; the
    # results (~70 bytes a line) stay in memory up to SPOOL_BYTES, then go to a file.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    try:
        async for result in service.import_users(ndjson_lines(request.stream()), actor=actor):
            spool.write((json.dumps(result, separators=(",", ":")) + "\n").encode())
    except BaseException:
        spool.close()
        raise
    await _audit_call(request, actor, 200, None)
    spool.seek(0)

    async def results() -> AsyncIterator[bytes]:
        try:
            while chunk := spool.read(64 * 1024):
                yield chunk
        finally:
            spool.close()

    return StreamingResponse(results(), media_type=NDJSON)


@router.get("/users/{user_id}", response_model=AdminUserOut)
async def get_user(request: Request, actor: Caller, user_id: str) -> Response:
    async def work() -> Response:
        return JSONResponse(user_json(await admin_users(request).get(user_id)))

    return await _call(request, actor, user_id, work())


@router.patch("/users/{user_id}", response_model=AdminUserOut, openapi_extra=_body(AdminUserPatch))
async def patch_user(request: Request, actor: Caller, user_id: str) -> Response:
    """Change fields; a changed email or phone is unverified unless its `*_verified`
    flag is in the same patch. `409 contact_taken` when it belongs to another account."""

    async def work() -> Response:
        changes = await _json(request, AdminUserPatch)
        user = await admin_users(request).patch(user_id, changes, actor=actor)
        return JSONResponse(user_json(user))

    return await _call(request, actor, user_id, work())


@router.delete("/users/{user_id}", status_code=204, response_class=Response)
async def delete_user(request: Request, actor: Caller, user_id: str) -> Response:
    """Delete the account with its codes, sessions and delivery jobs."""

    async def work() -> Response:
        await admin_users(request).delete(user_id, actor=actor)
        return Response(status_code=204)

    return await _call(request, actor, user_id, work())


@router.post("/users/{user_id}/sessions/revoke", status_code=204, response_class=Response)
async def revoke_sessions(request: Request, actor: Caller, user_id: str) -> Response:
    """End every session of the account (as a password reset does)."""

    async def work() -> Response:
        await admin_users(request).revoke_sessions(user_id, actor=actor)
        return Response(status_code=204)

    return await _call(request, actor, user_id, work())


@router.post("/users/{user_id}/recovery", status_code=202)
async def send_recovery(request: Request, actor: Caller, user_id: str) -> Response:
    """Send a reset code to the account's preferred verified contact, through the normal
    flow and its limits. `{"channel": "email"|"sms"|null}` (null: no verified contact,
    nothing sent)."""

    async def work() -> Response:
        channel = await admin_users(request).send_recovery(user_id, actor=actor)
        return JSONResponse({"channel": channel.value if channel else None}, status_code=202)

    return await _call(request, actor, user_id, work())


async def ndjson_lines(
    chunks: AsyncIterator[bytes], *, max_line: int = MAX_LINE_BYTES
) -> AsyncIterator[tuple[int, dict[str, Any] | ResetflowError]]:
    """(line number, object or error) for each non-empty line, read chunk by chunk: the
    body is never held whole, and a line over ``max_line`` bytes is skipped (reported)
    without being kept."""
    buffer = bytearray()
    line = 0
    overlong = False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not overlong:
                    buffer += chunk[start:]
                    if len(buffer) > max_line:
                        overlong, buffer = True, bytearray()
                break
            line += 1
            if overlong:
                overlong = False
                yield line, MalformedRequest(f"The line is longer than {max_line} bytes.")
            else:
                buffer += chunk[start:end]
                item = _parse_line(bytes(buffer), max_line)
                if item is not None:
                    yield line, item
            buffer = bytearray()
            start = end + 1
    if overlong:
        yield line + 1, MalformedRequest(f"The line is longer than {max_line} bytes.")
    elif buffer.strip():
        item = _parse_line(bytes(buffer), max_line)
        if item is not None:
            yield line + 1, item


def _parse_line(raw: bytes, max_line: int) -> dict[str, Any] | ResetflowError | None:
    if len(raw) > max_line:
        return MalformedRequest(f"The line is longer than {max_line} bytes.")
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return MalformedRequest("The line is not valid JSON.")
    if not isinstance(data, dict):
        return MalformedRequest("The line must be a JSON object.")
    return data
