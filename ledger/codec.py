"""The one place that turns events into JSON-ready data and back.

Events are stored as ``(type, data)``: the type is the class name, the data its
fields. Structuring is strict: unknown keys are refused, and so is a value of
the wrong JSON type (``"5"`` is not an int), with a message naming the field.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin
from uuid import UUID

import attrs
import cattrs
import orjson
from cattrs.preconf.json import make_converter

from ledger.errors import InvalidEvent
from ledger.events import ALL_EVENT_TYPES, Event

__all__ = ["converter", "decode", "encode", "event_type_name", "json_text", "structure"]

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=True, prefer_attrib_converters=False)

_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in ALL_EVENT_TYPES}


def _strict(kind: type[T]) -> None:
    def check(value: object, _: type) -> T:
        # bool is an int to Python but never a number to a JSON user.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    converter.register_structure_hook(kind, check)


for _kind in (str, int, bool):
    _strict(_kind)


def _float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {type(value).__name__}")
    return float(value)


converter.register_structure_hook(float, _float)
converter.register_unstructure_hook(UUID, str)
converter.register_structure_hook(UUID, lambda value, _: UUID(_checked_str(value)))
converter.register_unstructure_hook(dt.datetime, dt.datetime.isoformat)
converter.register_structure_hook(
    dt.datetime, lambda value, _: dt.datetime.fromisoformat(_checked_str(value))
)


def _is_tuple(cls: Any) -> bool:
    return get_origin(cls) is tuple


def _tuple_hook(cls: Any) -> Callable[[object, type], tuple[Any, ...]]:
    (item, _ellipsis) = get_args(cls)

    def structure_tuple(value: object, _: type) -> tuple[Any, ...]:
        # A string is iterable, but "abc" is never meant as ("a", "b", "c").
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected list, got {type(value).__name__}")
        return tuple(converter.structure(v, item) for v in value)

    return structure_tuple


def _enum(value: object, cls: type[enum.StrEnum]) -> enum.StrEnum:
    allowed = [member.value for member in cls]
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)} (got {value!r})")
    return cls(value)


converter.register_structure_hook_factory(_is_tuple, _tuple_hook)
converter.register_structure_hook(enum.StrEnum, _enum)
converter.register_unstructure_hook(enum.StrEnum, lambda member: member.value)


def _checked_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected string, got {type(value).__name__}")
    return value


def event_type_name(event: Event) -> str:
    return type(event).__name__


def encode(event: Event) -> tuple[str, dict[str, Any]]:
    """Return ``(type, data)`` for storing *event*."""
    data: dict[str, Any] = converter.unstructure(event)
    return event_type_name(event), data


def decode(type_name: str, data: Any) -> Event:
    """Rebuild an event from its stored ``(type, data)``; raise InvalidEvent if it does not fit."""
    cls = _EVENT_TYPES.get(type_name)
    if cls is None:
        raise InvalidEvent(f"unknown event type {type_name!r}", field="type")
    event: Event = structure(data, cls)
    return event


def json_text(value: object) -> str:
    """*value* as JSON text, for a json or jsonb parameter: orjson writes UUIDs and
    datetimes (with their offsets) as PostgreSQL reads them, several times faster than
    the json module."""
    return orjson.dumps(value).decode()


def structure(data: Any, cls: type[T]) -> T:
    """Structure *data* into *cls*, raising InvalidEvent naming the first bad field."""
    if attrs.has(cls) and not isinstance(data, Mapping):
        # cattrs would call data.keys() and fail with an AttributeError.
        raise InvalidEvent(f"expected an object, got {type(data).__name__}")
    try:
        return converter.structure(data, cls)
    except (cattrs.ClassValidationError, cattrs.ForbiddenExtraKeysError) as error:
        raise _invalid(error, cls) from error
    except (TypeError, ValueError) as error:
        raise InvalidEvent(f"{cls.__name__}: {error}") from error


def _invalid(error: Exception, cls: type) -> InvalidEvent:
    if isinstance(error, cattrs.ClassValidationError):
        # Newer cattrs wraps the extra-keys error in a ClassValidationError.
        extra_keys = [e for e in error.exceptions if isinstance(e, cattrs.ForbiddenExtraKeysError)]
        error = extra_keys[0] if extra_keys else error
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        extra = sorted(error.extra_fields)
        return InvalidEvent(f"unknown field {extra[0]!r}", field=extra[0])
    validator_error = _attrs_validator_error(error)
    if validator_error is not None:
        return validator_error
    messages = cattrs.transform_error(error, path="$", format_exception=_describe)
    # transform_error says e.g. "invalid value for type, expected int @ $.priority".
    first = messages[0] if messages else f"invalid {cls.__name__}"
    text, _, path = first.partition(" @ ")
    field = path.removeprefix("$").removeprefix(".") or None
    if "required field missing" in text:
        return InvalidEvent(f"{field} is required", field=field)
    return InvalidEvent(f"{field} {text}" if field else text, field=field)


# attrs validators say e.g. "'priority' must be <= 10: 11" or "Length of 'test_path' must be
# >= 1: 0"; they run in __init__, after cattrs has let go of the field, so the field's name
# comes from the message.
_ATTRS_MESSAGE = re.compile(r"^(?P<prefix>Length of )?'(?P<field>\w+)' (?P<rest>.*)$", re.DOTALL)


def _describe(error: BaseException, expected: type | None) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    if isinstance(error, TypeError | ValueError) and error.args:
        return str(error)
    return cattrs.v.format_exception(error, expected)


def _attrs_validator_error(error: Exception) -> InvalidEvent | None:
    if not isinstance(error, cattrs.ClassValidationError):
        return None
    for inner in error.exceptions:
        match = _ATTRS_MESSAGE.match(str(inner)) if isinstance(inner, ValueError) else None
        if match is not None:
            message = f"{match['prefix'] or ''}{match['field']} {match['rest']}"
            return InvalidEvent(message, field=match["field"])
    return None
