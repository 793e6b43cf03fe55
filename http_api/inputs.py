"""Reading what a request carries: a bounded JSON body, ids in the path, query parameters.

Each reader raises ApiError naming the offending input, so an endpoint either has valid
values in hand or has answered 4xx before touching the database.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn
from uuid import UUID

from starlette.requests import Request

from http_api.errors import ApiError

__all__ = [
    "MAX_BODY_BYTES",
    "json_object",
    "path_uuid",
    "query_choice",
    "query_int",
    "query_number",
    "query_text",
    "query_uuid",
]

MAX_BODY_BYTES = 64 * 1024


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object, at most MAX_BODY_BYTES long.

    With *optional*, an empty body reads as ``{}``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise ApiError(400, "malformed_json", f"the body is not UTF-8: {error.reason}") from error
    except json.JSONDecodeError as error:
        raise ApiError(
            400,
            "malformed_json",
            f"malformed JSON at line {error.lineno} column {error.colno}: {error.msg}",
        ) from error
    except ValueError as error:
        raise ApiError(400, "malformed_json", f"malformed JSON: {error}") from error
    if not isinstance(value, dict):
        raise ApiError(
            400, "invalid_body", f"the body must be a JSON object, not {type(value).__name__}"
        )
    return value


def _too_large() -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes"
    )


def path_uuid(request: Request, name: str) -> UUID:
    raw = request.path_params[name]
    try:
        return UUID(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_id", f"{name} must be a UUID (got {raw!r})", field=name
        ) from None


def query_text(request: Request, name: str, *, max_len: int = 200) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len:
        raise ApiError(
            400, "invalid_query", f"{name} is longer than {max_len} characters", field=name
        )
    return value


def query_uuid(request: Request, name: str) -> UUID | None:
    value = query_text(request, name)
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(
            400, "invalid_query", f"{name} must be a UUID (got {value!r})", field=name
        ) from None


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = query_text(request, name)
    if value is not None and value not in choices:
        raise ApiError(
            400,
            "invalid_query",
            f"{name} must be one of {', '.join(choices)} (got {value!r})",
            field=name,
        )
    return value


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    value = query_text(request, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            400,
            "invalid_query",
            f"{name} must be a whole number from {low} to {high} (got {value!r})",
            field=name,
        )
    return number


def query_number(request: Request, name: str, *, high: float) -> float:
    """A number of seconds from 0 to *high*; 0 when absent."""
    value = query_text(request, name)
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number <= high:
        raise ApiError(
            400,
            "invalid_query",
            f"{name} must be a number of seconds from 0 to {high:g} (got {value!r})",
            field=name,
        )
    return number
