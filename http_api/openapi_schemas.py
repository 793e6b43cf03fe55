"""The schemas of the OpenAPI document: the JSON bodies the API takes and gives."""

from __future__ import annotations

from typing import Any

from http_api.waiting import WAIT_REASONS
from ledger.capabilities import Platform
from ledger.decisions import JobStatus
from ledger.events import CaseStatus, Target

__all__ = ["CASE_STATUSES", "SCHEMAS", "STATUSES", "Json", "error_bodies", "json_body", "ref"]

Json = dict[str, Any]

STATUSES = [status.value for status in JobStatus]
CASE_STATUSES = [status.value for status in CaseStatus]
_TARGETS = [target.value for target in Target]
_PLATFORMS = [platform.value for platform in Platform]


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
        403: "the token's organisation may not do this",
        404: "no such thing for this organisation",
        409: "the job's history does not allow it",
        413: "body larger than 64 KiB",
        422: "Idempotency-Key reused for another request, or a bundle or build this "
        "organisation has not uploaded",
        503: "the database is unavailable",
    }
    return {str(status): json_body(ref("Error"), meaning[status]) for status in statuses}


_SUBMIT_FIELDS: Json = {
    "org_id": {"type": "string", "description": "owning organisation; a token implies it"},
    "app_version_id": {"type": "string", "description": "the app build under test"},
    "test_path": {"type": "string", "description": "one AppWright spec (a single job)"},
    "target": {"type": "string", "enum": _TARGETS},
    "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
    "platform": {
        "type": ["string", "null"],
        "enum": [*_PLATFORMS, None],
        "description": "what the device must run; absent: inferred from the build's suffix",
    },
    "device": {"type": ["string", "null"], "description": "a device model, e.g. Pixel 8"},
    "os_version": {
        "type": ["string", "null"],
        "description": "an OS version prefix: 14 is met by 14 and 14.1",
    },
    "build": {
        "type": ["string", "null"],
        "description": "app binary: path, URL, bs:// id, or sha256:<hex> of an uploaded build",
    },
    "repo": {"type": ["string", "null"]},
    "commit": {"type": ["string", "null"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 32},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
    "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "queue_timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "supersede_key": {
        "type": ["string", "null"],
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
            "tests": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": 1000,
            },
            "profiles": {
                "type": "array",
                "description": "a device matrix: one job per test per profile, in one run",
                "items": ref("DeviceProfile"),
                "minItems": 1,
                "maxItems": 20,
            },
        },
    },
    "DeviceProfile": {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _SUBMIT_FIELDS[name] for name in ("platform", "device", "os_version")},
    },
    "Job": {
        "type": "object",
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
