"""The OpenAPI 3.1 description of the API, written by hand.

A test checks that its paths and methods are exactly the app's routes, and that the
submit schema lists exactly the fields the ledger's JobSubmitted accepts.
"""

from __future__ import annotations

from typing import Any

from ledger.decisions import JobStatus
from ledger.events import Target

__all__ = ["openapi_document"]

Json = dict[str, Any]

_STATUSES = [status.value for status in JobStatus]
_TARGETS = [target.value for target in Target]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> Json:
    meaning = {
        400: "invalid input; `field` names it",
        401: "no valid API token",
        403: "the token's organisation may not do this",
        404: "no such thing for this organisation",
        409: "the job's history does not allow it",
        413: "body larger than 64 KiB",
        422: "Idempotency-Key reused for another request",
        503: "the database is unavailable",
    }
    return {str(status): _json(_ref("Error"), meaning[status]) for status in statuses}


def _query(name: str, description: str, schema: Json) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }


_ORG = _query("org", "organisation; a token's own, or any in local mode", {"type": "string"})
_WAIT = _query(
    "wait",
    "hold the answer up to this many seconds until finished",
    {"type": "number", "minimum": 0, "maximum": 60},
)
_AUTHED: list[Json] = [{"bearer": []}]

_SUBMIT_FIELDS: Json = {
    "org_id": {"type": "string", "description": "owning organisation; a token implies it"},
    "app_version_id": {"type": "string", "description": "the app build under test"},
    "test_path": {"type": "string", "description": "one AppWright spec (a single job)"},
    "target": {"type": "string", "enum": _TARGETS},
    "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
    "build": {"type": ["string", "null"], "description": "app binary: path, URL or bs:// id"},
    "repo": {"type": ["string", "null"]},
    "commit": {"type": ["string", "null"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 32},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
    "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "queue_timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "force": {
        "type": "boolean",
        "default": False,
        "description": "queue even if an identical job is still queued or running",
    },
}

_SCHEMAS: Json = {
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
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "org_id": {"type": "string"},
            "app_version_id": {"type": "string"},
            "test_path": {"type": "string"},
            "target": {"type": "string", "enum": _TARGETS},
            "priority": {"type": "integer"},
            "status": {"type": "string", "enum": _STATUSES},
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
            "submitted_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "duration_s": {"type": ["number", "null"]},
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "format": "uuid"},
            "done": {"type": "boolean"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "jobs": {"type": "array", "items": _ref("Job")},
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
            "groups": {"type": "array", "items": _ref("Group")},
            "devices": {"type": "array", "items": _ref("Device")},
            "jobs": {"type": "array", "items": _ref("Job")},
        },
    },
}

_SUBMIT: Json = {
    "summary": "Submit one job, or a suite of tests that gets a run id",
    "security": _AUTHED,
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a retried request with the same key returns the same jobs",
            "schema": {"type": "string", "maxLength": 200},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [_ref("SubmitJob"), _ref("SubmitSuite")]}}
        },
    },
    "responses": {
        "201": _json(
            {
                "oneOf": [
                    _ref("Job"),
                    {
                        "type": "object",
                        "properties": {
                            "run_id": {"type": "string", "format": "uuid"},
                            "jobs": {"type": "array", "items": _ref("Job")},
                        },
                    },
                ]
            },
            "created: a Job, or {run_id, jobs} for a suite",
        ),
        "200": _json({}, "existing jobs: a retried request, or an identical active job"),
        **_errors(400, 401, 403, 413, 422, 503),
    },
}

_GET_JOB: Json = {
    "summary": "A job; with ?wait=N, held until it has ended or N seconds passed",
    "security": _AUTHED,
    "parameters": [_path("job_id"), _WAIT, _ORG],
    "responses": {"200": _json(_ref("Job"), "the job"), **_errors(400, 401, 404, 503)},
}

_PATHS: Json = {
    "/": {
        "get": {
            "summary": "The live dashboard (HTML)",
            "responses": {"200": {"description": "an HTML page", "content": {"text/html": {}}}},
        }
    },
    "/dashboard/snapshot": {
        "get": {
            "summary": "What the dashboard shows",
            "security": _AUTHED,
            "parameters": [_ORG],
            "responses": {
                "200": _json(_ref("Snapshot"), "counts, queue, groups, devices, jobs"),
                **_errors(401, 403, 503),
            },
        }
    },
    "/events/stream": {
        "get": {
            "summary": "Server-sent events: a `snapshot` event now and on every change",
            "security": _AUTHED,
            "parameters": [_ORG],
            "responses": {
                "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                **_errors(401, 403),
            },
        }
    },
    "/jobs": {
        "post": _SUBMIT,
        "get": {
            "summary": "Jobs, newest first, keyset-paginated",
            "security": _AUTHED,
            "parameters": [
                _ORG,
                _query("status", "only jobs in this status", {"type": "string", "enum": _STATUSES}),
                _query("app_version_id", "only jobs of this app build", {"type": "string"}),
                _query("run_id", "only jobs of this run", {"type": "string", "format": "uuid"}),
                _query(
                    "limit",
                    "page size",
                    {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                ),
                _query("cursor", "next_cursor of the previous page", {"type": "string"}),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    },
                    "a page of jobs",
                ),
                **_errors(400, 401, 403, 503),
            },
        },
    },
    "/submit-job": {"post": {**_SUBMIT, "summary": "Alias of POST /jobs"}},
    "/jobs/{job_id}": {"get": _GET_JOB},
    "/status/{job_id}": {"get": {**_GET_JOB, "summary": "Alias of GET /jobs/{job_id}"}},
    "/jobs/{job_id}/events": {
        "get": {
            "summary": "The job's timeline: every event of its stream",
            "security": _AUTHED,
            "parameters": [_path("job_id"), _ORG],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"events": {"type": "array", "items": _ref("Event")}},
                    },
                    "the events in order",
                ),
                **_errors(400, 401, 404, 503),
            },
        }
    },
    "/jobs/{job_id}/cancel": {
        "post": {
            "summary": "Cancel a job; one that has already ended is returned unchanged",
            "security": _AUTHED,
            "parameters": [_path("job_id"), _ORG],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"reason": {"type": "string", "maxLength": 500}},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Job"), "the job, cancelled or as it ended"),
                **_errors(400, 401, 404, 409, 503),
            },
        }
    },
    "/runs/{run_id}": {
        "get": {
            "summary": "A suite's jobs and counts; with ?wait=N, held until every job ended",
            "security": _AUTHED,
            "parameters": [_path("run_id"), _WAIT, _ORG],
            "responses": {"200": _json(_ref("Run"), "the run"), **_errors(400, 401, 404, 503)},
        }
    },
    "/groups": {
        "get": {
            "summary": "Groups of jobs that share a device install",
            "security": _AUTHED,
            "parameters": [
                _ORG,
                _query(
                    "limit",
                    "how many",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"groups": {"type": "array", "items": _ref("Group")}},
                    },
                    "groups",
                ),
                **_errors(400, 401, 403, 503),
            },
        }
    },
    "/devices": {
        "get": {
            "summary": "Device slots and what they hold",
            "security": _AUTHED,
            "parameters": [_ORG],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"devices": {"type": "array", "items": _ref("Device")}},
                    },
                    "devices",
                ),
                **_errors(401, 403, 503),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "The process is alive",
            "responses": {"200": _json({"type": "object"}, "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "The database answers and the projectors are not far behind",
            "responses": {
                "200": _json({"type": "object"}, "ready"),
                "503": _json(_ref("Error"), "not ready: database or projector lag"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {}}}
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
        }
    },
}


def openapi_document() -> Json:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qgjob",
            "version": "1",
            "description": "Queue, group and run AppWright test jobs. Every error answers "
            '{"error": {"code", "message", "field"}}.',
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": _PATHS,
    }
