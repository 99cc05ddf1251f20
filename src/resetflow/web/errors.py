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
from starlette.responses import JSONResponse, Response

from resetflow.errors import ErrorCode, MalformedRequest, ResetflowError, ServiceUnavailable
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
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            error.status_code, ErrorCode.MALFORMED_REQUEST
        )
        message = {404: "Not found.", 405: "Method not allowed."}.get(
            error.status_code, "Bad request."
        )
        return JSONResponse(
            {"error": message, "code": code.value},
            status_code=error.status_code,
            headers=error.headers,
        )

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
