"""The API's one error shape, and the one place exceptions become error responses.

Every error answers ``{"error": {"code", "message", "field"}}``: ``code`` is a stable
snake_case name a client can branch on, ``message`` a sentence for people, ``field`` the
dotted name of the offending input when one is to blame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from ledger.errors import ConcurrencyConflict, InvalidEvent, NotFound, TransitionRefused

__all__ = ["ApiError", "error_response", "exception_handlers"]

_log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API refuses, with the HTTP status and the error body to answer with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


async def _invalid_event(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidEvent)
    return error_response(400, "invalid_field", exc.message, exc.field)


async def _not_found(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound)
    return error_response(404, "not_found", exc.message)


async def _refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, TransitionRefused | ConcurrencyConflict)
    return error_response(409, "conflict", exc.message)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = "no such path" if exc.status_code == 404 else exc.detail
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    _log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return error_response(
        503, "database_unavailable", "the database cannot be reached; try again shortly"
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle the request")


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    return {
        ApiError: _api_error,
        InvalidEvent: _invalid_event,
        NotFound: _not_found,
        TransitionRefused: _refused,
        ConcurrencyConflict: _refused,
        HTTPException: _http_exception,
        # A pool timeout is an OperationalError too.
        psycopg.OperationalError: _database_unavailable,
        Exception: _unexpected,
    }
