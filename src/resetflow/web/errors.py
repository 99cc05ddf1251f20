"""Turning every failure into a clear answer: a stable error code, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from limits.errors import StorageError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from resetflow.errors import (
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    ResetflowError,
    ServiceUnavailable,
)
from resetflow.web.error_json import error_response
from resetflow.web.render import error_answer

log = logging.getLogger("resetflow.web")


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ResetflowError)
        return error_answer(request, error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        return error_answer(request, MalformedRequest())

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        known = {404: NotFound, 405: MethodNotAllowed}.get(error.status_code)
        answer = known() if known else MalformedRequest()
        response = error_response(answer, headers=error.headers)
        # The router's own status (a 404 for a 405-shaped case stays as it decided).
        response.status_code = error.status_code
        return response

    async def on_backend_down(request: Request, error: Exception) -> Response:
        # The database or Redis is unreachable: a clean 503 that the client may retry;
        # nothing was half-written (each change is one transaction or one Lua script).
        log.error("backend_unavailable", extra={"error": type(error).__name__})
        response = error_answer(request, ServiceUnavailable())
        response.headers["Retry-After"] = "5"
        return response

    app.add_exception_handler(ResetflowError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    for backend_error in (DBAPIError, PoolTimeout, OSError, RedisError, StorageError):
        app.add_exception_handler(backend_error, on_backend_down)
