"""The event codec: every event type round-trips; bad data is refused naming the field."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import InvalidEvent, decode, encode
from ledger.events import (
    ALL_EVENT_TYPES,
    CaseError,
    CaseResult,
    CaseStatus,
    JobFailed,
    JobPassed,
    JobSubmitted,
    Target,
)
from tests.support.factories import submitted

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,30}\Z")
short_text = st.text(max_size=40)
finite = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)

_overrides: dict[type, dict[str, Any]] = {
    JobSubmitted: {
        "org_id": names,
        "app_version_id": names,
        "test_path": st.text(min_size=1, max_size=60),
        "priority": st.integers(1, 10),
        "tags": st.lists(short_text, max_size=5).map(tuple),
        "max_attempts": st.integers(1, 10),
        "timeout_s": st.none() | finite,
        "queue_timeout_s": st.none() | finite,
        "supersede_key": st.none() | names,
        "rerun_of": st.none() | st.uuids(),
    },
}
_cases = st.lists(
    st.builds(
        CaseResult,
        file=short_text,
        title_path=st.lists(short_text, min_size=1, max_size=3).map(tuple),
        status=st.sampled_from(CaseStatus),
        line=st.none() | st.integers(1, 10_000),
        duration_s=finite,
        retry=st.integers(0, 3),
        error=st.none()
        | st.builds(
            CaseError, message=short_text, file=short_text, line=st.none() | st.integers(1, 99)
        ),
    ),
    max_size=4,
).map(tuple)
_overrides[JobPassed] = {"tests": _cases}
_overrides[JobFailed] = {"tests": _cases}


def _strategy(cls: type) -> st.SearchStrategy[Any]:
    defaults: dict[str, Any] = {
        "attempt": st.integers(1, 50),
        "duration_s": finite,
        "capabilities": st.dictionaries(short_text, short_text, max_size=3),
    }
    attrs.resolve_types(cls)
    fields = {a.name: defaults[a.name] for a in attrs.fields(cls) if a.name in defaults}
    fields.update(_overrides.get(cls, {}))
    return st.builds(cls, **fields)


any_event = st.one_of([_strategy(cls) for cls in ALL_EVENT_TYPES])


@given(any_event)
def test_every_event_type_round_trips_through_json(event: Any) -> None:
    type_name, data = encode(event)
    stored = json.loads(json.dumps(data))
    assert decode(type_name, stored) == event


def _submitted_data(**changes: Any) -> dict[str, Any]:
    _, data = encode(submitted())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (_submitted_data(surprise=1), "surprise", "unknown field"),
        (_submitted_data(priority="5"), "priority", "expected int"),
        (_submitted_data(priority=True), "priority", "expected int"),
        (_submitted_data(priority=11), "priority", "<= 10"),
        (_submitted_data(target="phone"), "target", "one of emulator, device, browserstack"),
        (_submitted_data(tags="smoke"), "tags", "expected list"),
        (_submitted_data(run_id="not-a-uuid"), "run_id", "UUID"),
        (_submitted_data(org_id=""), "org_id", "must be 1 to 200"),
        ({k: v for k, v in _submitted_data().items() if k != "app_version_id"},
         "app_version_id", "required"),
    ],
)
def test_bad_event_data_is_refused_naming_the_field(
    data: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidEvent, match=words) as refused:
        decode("JobSubmitted", data)
    assert refused.value.field == field


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type 'JobExploded'"):
        decode("JobExploded", {})


def test_targets_are_stored_as_plain_strings() -> None:
    _, data = encode(submitted(target=Target.BROWSERSTACK))
    assert data["target"] == "browserstack"
    assert type(data["target"]) is str
