"""Reading what a request carries: a bounded JSON body, ids in the path, query parameters.

Each reader raises ApiError naming the offending input, so an endpoint either has valid
values in hand or has answered 4xx before touching the database. Every string a request
carries is checked here once, wherever it will go: PostgreSQL cannot store a NUL
character, and a lone surrogate (what invalid UTF-8 decodes to here) cannot be encoded
for it at all, so either would otherwise fail deep inside a transaction.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, NoReturn
from uuid import UUID

from starlette.requests import Request

from http_api.errors import ApiError
from ledger.events import NAME_PATTERN

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_TEXT",
    "MAX_TIMEOUT_S",
    "bounded_seconds",
    "json_object",
    "path_uuid",
    "query_choice",
    "query_given",
    "query_int",
    "query_name",
    "query_number",
    "query_uuid",
]

MAX_BODY_BYTES = 64 * 1024
#: The longest string any field of a body may hold; fields may set tighter limits.
MAX_TEXT = 4096
#: The longest run or queue timeout a job may ask for: a week, in seconds.
MAX_TIMEOUT_S = 7 * 24 * 3600
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_NAME = re.compile(NAME_PATTERN)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _number(text: str) -> float | int:
    """A JSON number with a fraction or exponent: 10.0 is an integer to JSON Schema (and so
    to the OpenAPI document), so it is one here too."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= 2**53 else value


def _text_problem(text: str) -> str | None:
    """What makes *text* unfit to store, as the end of a sentence; None when it is fit."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def _check_json(value: object, field: str) -> None:
    """Refuse strings that cannot be stored and numbers that are not finite, naming the
    field of *value* (``tags[2]``, ``tests[0]``); *field* is empty for the body itself."""
    match value:
        case str():
            problem = _text_problem(value)
            if problem is None and len(value) > MAX_TEXT:
                problem = f"is longer than {MAX_TEXT} characters"
            if problem is not None:
                raise ApiError(400, "invalid_field", f"{field} {problem}", field=field)
        case float() if not math.isfinite(value):
            raise ApiError(400, "invalid_field", f"{field} must be a finite number", field=field)
        case list():
            for index, item in enumerate(value):
                _check_json(item, f"{field}[{index}]")
        case dict():
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    # The key itself cannot be echoed back: it may not even encode.
                    where = field or "the body"
                    raise ApiError(
                        400,
                        "invalid_field",
                        f"a field name in {where} {problem}",
                        field=field or None,
                    )
                _check_json(item, f"{field}.{key}" if field else key)


async def json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object, at most MAX_BODY_BYTES long, every string in it fit to
    store and every number finite.

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
        # Bytes that are not UTF-8 become lone surrogates, which _check_json then finds
        # in the field that holds them.
        value = json.loads(
            body.decode("utf-8", errors="surrogateescape"),
            parse_constant=_refuse_constant,
            parse_float=_number,
        )
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
    _check_json(value, "")
    return value


def _too_large() -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is larger than {MAX_BODY_BYTES} bytes"
    )


def bounded_seconds(body: dict[str, Any], names: Iterable[str], *, high: float) -> None:
    """Refuse a number of seconds above *high* in the fields *names* of *body*.

    Other checks of these fields (a number, above zero) are the ledger's; this bound is
    the API's, so that no job can ask for a timeout no clock can count to.
    """
    for name in names:
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > high:
            raise ApiError(
                400,
                "invalid_field",
                f"{name} must be at most {high:g} seconds",
                field=name,
            )


def path_uuid(request: Request, name: str) -> UUID:
    raw = request.path_params[name]
    try:
        return UUID(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_id", f"{name} must be a UUID (got {raw!r})", field=name
        ) from None


def _invalid_query(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_query", message, field=name)


def _query_values(request: Request) -> dict[str, list[str]]:
    """The query string's parameters, decoded the way a body is: bytes that are not UTF-8
    become lone surrogates, for query_given to refuse by name."""
    values: dict[str, list[str]] = {}
    raw: bytes = request.scope.get("query_string", b"")
    for pair in raw.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            values.setdefault(_unquote(name), []).append(_unquote(value))
    return values


def _unquote(raw: bytes) -> str:
    return urllib.parse.unquote_to_bytes(raw.replace(b"+", b" ")).decode(
        "utf-8", errors="surrogateescape"
    )


def query_given(request: Request, name: str, max_len: int = 200) -> str | None:
    """The parameter *name* as given (empty included), at most once; None when absent."""
    given = _query_values(request).get(name)
    if given is None:
        return None
    if len(given) > 1:
        raise _invalid_query(name, f"{name} is given {len(given)} times; give it once")
    value = given[0]
    problem = _text_problem(value)
    if problem is not None:
        raise _invalid_query(name, f"{name} {problem}")
    if len(value) > max_len:
        raise _invalid_query(name, f"{name} is longer than {max_len} characters")
    return value


def query_name(request: Request, name: str) -> str | None:
    """An organisation or app version id; None when absent."""
    value = query_given(request, name)
    if value is not None and not _NAME.match(value):
        raise _invalid_query(
            name,
            f"{name} must be 1 to 200 letters, digits or ._:/@+- starting with a letter or "
            f"digit (got {value!r})",
        )
    return value


def query_uuid(request: Request, name: str) -> UUID | None:
    value = query_given(request, name)
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise _invalid_query(name, f"{name} must be a UUID (got {value!r})") from None


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = query_given(request, name)
    if value is not None and value not in choices:
        raise _invalid_query(name, f"{name} must be one of {', '.join(choices)} (got {value!r})")
    return value


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    value = query_given(request, name)
    if value is None:
        return default
    number = int(value) if _INTEGER.fullmatch(value) else low - 1
    if not low <= number <= high:
        raise _invalid_query(
            name, f"{name} must be a whole number from {low} to {high} (got {value!r})"
        )
    return number


def query_number(request: Request, name: str, *, high: float) -> float:
    """A number of seconds from 0 to *high*; 0 when absent."""
    value = query_given(request, name)
    if value is None:
        return 0.0
    number = float(value) if _NUMBER.fullmatch(value) else math.nan
    if not 0 <= number <= high:
        raise _invalid_query(
            name, f"{name} must be a number of seconds from 0 to {high:g} (got {value!r})"
        )
    return number
