"""The schemas of the OpenAPI document: the JSON bodies the API takes and gives."""

from __future__ import annotations

from typing import Any

from http_api.inputs import MAX_TEXT, MAX_TIMEOUT_S
from http_api.waiting import WAIT_REASONS
from ledger.capabilities import DEVICE_PATTERN, OS_VERSION_PATTERN, Platform
from ledger.decisions import JobStatus
from ledger.events import NAME_PATTERN, CaseStatus, Target

__all__ = [
    "CASE_STATUSES",
    "NAME",
    "ORG_PARAMETER",
    "SCHEMAS",
    "STATUSES",
    "Json",
    "error_bodies",
    "json_body",
    "ref",
    "text",
]

Json = dict[str, Any]

STATUSES = [status.value for status in JobStatus]
CASE_STATUSES = [status.value for status in CaseStatus]
_TARGETS = [target.value for target in Target]
_PLATFORMS = [platform.value for platform in Platform]


#: An organisation or app version id.
NAME: Json = {"type": "string", "pattern": NAME_PATTERN}
#: The ``org`` query parameter of the routes that read or write for an organisation.
ORG_PARAMETER: Json = {
    "name": "org",
    "in": "query",
    "required": False,
    "description": "organisation; a token's own, or any in local mode",
    "schema": NAME,
}
#: Text PostgreSQL can store: no NUL character (inputs.py refuses one with a 400).
_NO_NUL = "^[^\\x00]*$"


def text(max_length: int = MAX_TEXT, *, min_length: int = 0, nullable: bool = False) -> Json:
    """A string field of a body or query, as inputs.py and the ledger bound it."""
    schema: Json = {
        "type": ["string", "null"] if nullable else "string",
        "maxLength": max_length,
        "pattern": _NO_NUL,
    }
    if min_length:
        schema["minLength"] = min_length
    return schema


_SECONDS: Json = {
    "type": ["number", "null"],
    "exclusiveMinimum": 0,
    "maximum": MAX_TIMEOUT_S,
    "description": f"seconds, at most {MAX_TIMEOUT_S} (a week)",
}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Json, description: str) -> Json:
    """A response whose JSON body follows *schema*."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_bodies(*statuses: int) -> Json:
    """The error responses of these *statuses*, each with what it means here."""
    meaning = {
        400: "invalid input; `field` names it",
        401: "no valid API token",
        403: "another organisation's (`org`), or beyond the token's scopes",
        404: "no such thing for this organisation",
        409: "the job's history does not allow it",
        413: "body larger than 64 KiB",
        422: "Idempotency-Key reused for another request, or a bundle or build this "
        "organisation has not uploaded",
        503: "the database is unavailable",
    }
    return {str(status): json_body(ref("Error"), meaning[status]) for status in statuses}


_SUBMIT_FIELDS: Json = {
    "org_id": {**NAME, "description": "owning organisation; a token implies it"},
    "app_version_id": {**NAME, "description": "the app build under test"},
    "test_path": {**text(min_length=1), "description": "one AppWright spec (a single job)"},
    "target": {"type": "string", "enum": _TARGETS},
    "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
    "platform": {
        "type": ["string", "null"],
        "enum": [*_PLATFORMS, None],
        "description": "what the device must run; absent: inferred from the build's suffix",
    },
    "device": {
        "type": ["string", "null"],
        "pattern": DEVICE_PATTERN,
        "description": "a device model, e.g. Pixel 8",
    },
    "os_version": {
        "type": ["string", "null"],
        "pattern": OS_VERSION_PATTERN,
        "description": "an OS version prefix: 14 is met by 14 and 14.1",
    },
    "build": {
        **text(2048, nullable=True),
        "description": "app binary: path, URL, bs:// id, or sha256:<hex> of an uploaded build",
    },
    "repo": text(512, nullable=True),
    "commit": text(128, nullable=True),
    "tags": {"type": "array", "items": text(), "maxItems": 32},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
    "timeout_s": _SECONDS,
    "queue_timeout_s": _SECONDS,
    "supersede_key": {
        "type": ["string", "null"],
        "pattern": NAME_PATTERN,
        "description": "a later run with this key may cancel this one (POST /runs/{id}/supersede)",
    },
    "rerun_of": {
        "type": ["string", "null"],
        "format": "uuid",
        "description": "the run these jobs rerun",
    },
    "bundle": {
        "type": ["string", "null"],
        "pattern": "^sha256:[0-9a-f]{64}$",
        "description": "test bundle the specs run from: sha256:<hex> of an uploaded bundle",
    },
    "force": {
        "type": "boolean",
        "default": False,
        "description": "queue even if an identical job is still queued or running",
    },
}

_PROFILE_FIELDS = ("platform", "device", "os_version")
_TESTS: Json = {"type": "array", "items": text(min_length=1), "minItems": 1, "maxItems": 1000}

SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "field"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                },
            }
        },
    },
    "SubmitJob": {
        "type": "object",
        "additionalProperties": False,
        "required": ["app_version_id", "test_path", "target"],
        "properties": _SUBMIT_FIELDS,
    },
    "SubmitSuite": {
        "type": "object",
        "additionalProperties": False,
        "required": ["app_version_id", "tests", "target"],
        "properties": {
            **{k: v for k, v in _SUBMIT_FIELDS.items() if k != "test_path"},
            "tests": _TESTS,
        },
    },
    "SubmitMatrix": {
        "type": "object",
        "description": "a device matrix: one job per test per profile, in one run; the "
        "profiles say what each device must be, so the body itself does not",
        "additionalProperties": False,
        "required": ["app_version_id", "target", "profiles"],
        "oneOf": [{"required": ["test_path"]}, {"required": ["tests"]}],
        "properties": {
            **{k: v for k, v in _SUBMIT_FIELDS.items() if k not in _PROFILE_FIELDS},
            "tests": _TESTS,
            "profiles": {
                "type": "array",
                "items": ref("DeviceProfile"),
                "minItems": 1,
                "maxItems": 20,
            },
        },
    },
    "DeviceProfile": {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _SUBMIT_FIELDS[name] for name in _PROFILE_FIELDS},
    },
    "Job": {
        "type": "object",
        "required": ["job_id", "org_id", "app_version_id", "test_path", "target", "status"],
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "org_id": {"type": "string"},
            "app_version_id": {"type": "string"},
            "test_path": {"type": "string"},
            "target": {"type": "string", "enum": _TARGETS},
            "platform": {"type": ["string", "null"]},
            "device": {"type": ["string", "null"]},
            "os_version": {"type": ["string", "null"]},
            "priority": {"type": "integer"},
            "status": {"type": "string", "enum": STATUSES},
            "unschedulable": {
                "type": ["string", "null"],
                "description": "why no live device slot can take this waiting job",
            },
            "run_id": {"type": ["string", "null"], "format": "uuid"},
            "group_id": {"type": ["string", "null"], "format": "uuid"},
            "device_id": {"type": ["string", "null"], "format": "uuid"},
            "attempts": {"type": "integer"},
            "flaky": {"type": "boolean"},
            "failure_kind": {"type": ["string", "null"], "enum": ["test", "infrastructure", None]},
            "last_error": {"type": ["string", "null"]},
            "build": {"type": ["string", "null"]},
            "repo": {"type": ["string", "null"]},
            "commit": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "max_attempts": {"type": "integer"},
            "timeout_s": {"type": ["number", "null"]},
            "supersede_key": {"type": ["string", "null"]},
            "rerun_of": {"type": ["string", "null"], "format": "uuid"},
            "submitted_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "duration_s": {"type": ["number", "null"]},
            "tests": {
                "type": ["array", "null"],
                "items": ref("TestCase"),
                "description": "the test cases of the last finished attempt, when reported",
            },
            "waiting": {
                "type": ["object", "null"],
                "description": "GET /jobs/{id} only: what holds a queued job",
                "properties": {
                    "reason": {"type": "string", "enum": list(WAIT_REASONS)},
                    "message": {"type": "string"},
                    "until": {"type": "string", "format": "date-time"},
                    "jobs_ahead": {"type": "integer"},
                    "slots": {"type": "integer"},
                    "org_max_slots": {"type": "integer"},
                    "org_slots_used": {"type": "integer"},
                },
            },
        },
    },
    "TestCase": {
        "type": "object",
        "properties": {
            "file": {"type": "string"},
            "title_path": {"type": "array", "items": {"type": "string"}},
            "status": {"type": "string", "enum": CASE_STATUSES},
            "line": {"type": ["integer", "null"]},
            "duration_s": {"type": "number"},
            "retry": {"type": "integer"},
            "error": {
                "type": ["object", "null"],
                "properties": {
                    "message": {"type": "string"},
                    "file": {"type": "string"},
                    "line": {"type": ["integer", "null"]},
                },
            },
        },
    },
    "TestHistory": {
        "type": "object",
        "description": "a row of the test_history auditor view",
        "properties": {
            "test_file": {"type": "string"},
            "test_title": {"type": "string"},
            "runs": {"type": "integer"},
            "passes": {"type": "integer"},
            "failures": {"type": "integer"},
            "flaky_passes": {"type": "integer"},
            "flake_rate": {"type": "number"},
            "last_failure": {"type": ["string", "null"], "format": "date-time"},
            "median_duration_s": {"type": ["number", "null"]},
        },
    },
    "Suite": {
        "type": "object",
        "required": ["run_id", "jobs"],
        "additionalProperties": False,
        "properties": {
            "run_id": {"type": "string", "format": "uuid"},
            "jobs": {"type": "array", "items": ref("Job")},
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "format": "uuid"},
            "rerun_of": {"type": ["string", "null"], "format": "uuid"},
            "done": {"type": "boolean"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "jobs": {"type": "array", "items": ref("Job")},
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "position": {"type": "integer"},
            "version": {"type": "integer"},
            "type": {"type": "string"},
            "data": {"type": "object"},
            "metadata": {"type": "object"},
            "recorded_at": {"type": "string", "format": "date-time"},
        },
    },
    "Group": {"type": "object", "description": "a row of the groups projection"},
    "Device": {"type": "object", "description": "a row of the devices projection"},
    "Snapshot": {
        "type": "object",
        "properties": {
            "generated_at": {"type": "string", "format": "date-time"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "queue": {"type": "array", "items": {"type": "object"}},
            "groups": {"type": "array", "items": ref("Group")},
            "devices": {"type": "array", "items": ref("Device")},
            "jobs": {"type": "array", "items": ref("Job")},
        },
    },
}
