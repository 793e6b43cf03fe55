"""The OpenAPI 3.1 description of the API, written by hand.

A test checks that its paths and methods are exactly the app's routes, and that the
submit schema lists exactly the fields the ledger's JobSubmitted accepts.
"""

from __future__ import annotations

from http_api.openapi_blobs import BLOB_PATHS, BLOB_SCHEMAS
from http_api.openapi_dashboard import DASHBOARD_PATHS
from http_api.openapi_schemas import (
    NAME,
    ORG_PARAMETER,
    SCHEMAS,
    STATUSES,
    Json,
    error_bodies,
    json_body,
    ref,
    text,
)
from http_api.views import CURSOR_PATTERN

__all__ = ["openapi_document"]


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


#: What any route that needs a token may answer besides its own: bad input, no token,
#: another organisation or a token without the scope, the database away.
_AUTHED_ERRORS = (400, 401, 403, 503)


def _wait(max_wait_s: float) -> Json:
    return _query(
        "wait",
        "hold the answer up to this many seconds until finished",
        {"type": "number", "minimum": 0, "maximum": max_wait_s},
    )


_AUTHED: list[Json] = [{"bearer": []}]

_SUBMIT: Json = {
    "summary": "Submit one job, or a suite of tests that gets a run id",
    "security": _AUTHED,
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a retried request with the same key returns the same jobs",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [ref("SubmitJob"), ref("SubmitSuite"), ref("SubmitMatrix")]}
            }
        },
    },
    "responses": {
        "201": {
            **json_body(
                {"oneOf": [ref("Job"), ref("Suite")]}, "created: a Job, or a Suite for a suite"
            ),
            "links": {
                "run": {
                    "operationId": "get_runs_run_id",
                    "parameters": {"run_id": "$response.body#/run_id"},
                    "description": "a suite's run",
                }
            },
        },
        "200": json_body(
            {"oneOf": [ref("Job"), ref("Suite")]},
            "existing jobs: a retried request, or an identical active job",
        ),
        **error_bodies(*_AUTHED_ERRORS, 413, 422),
    },
}


_REASON_BODY: Json = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"reason": text(500, min_length=1)},
            }
        }
    },
}


def _get_job(wait: Json) -> Json:
    return {
        "summary": "A job; with ?wait=N, held until it has ended or N seconds passed",
        "security": _AUTHED,
        "parameters": [_path("job_id"), wait, ORG_PARAMETER],
        "responses": {
            "200": json_body(ref("Job"), "the job"),
            **error_bodies(*_AUTHED_ERRORS, 404),
        },
    }


def _paths(max_wait_s: float) -> Json:
    wait = _wait(max_wait_s)
    return {
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
                "parameters": [ORG_PARAMETER],
                "responses": {
                    "200": json_body(ref("Snapshot"), "counts, queue, groups, devices, jobs"),
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/events/stream": {
            "get": {
                "summary": "Server-sent events: a `snapshot` event now and on every change",
                "security": _AUTHED,
                "parameters": [ORG_PARAMETER],
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/jobs": {
            "post": _SUBMIT,
            "get": {
                "summary": "Jobs, newest first, keyset-paginated",
                "security": _AUTHED,
                "parameters": [
                    ORG_PARAMETER,
                    _query(
                        "status", "only jobs in this status", {"type": "string", "enum": STATUSES}
                    ),
                    _query("app_version_id", "only jobs of this app build", NAME),
                    _query("run_id", "only jobs of this run", {"type": "string", "format": "uuid"}),
                    _query(
                        "limit",
                        "page size",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    ),
                    _query(
                        "cursor",
                        "next_cursor of the previous page",
                        {"type": "string", "pattern": CURSOR_PATTERN},
                    ),
                ],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": ref("Job")},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                        "a page of jobs",
                    ),
                    **error_bodies(*_AUTHED_ERRORS),
                },
            },
        },
        "/submit-job": {"post": {**_SUBMIT, "summary": "Alias of POST /jobs"}},
        "/jobs/{job_id}": {"get": _get_job(wait)},
        "/status/{job_id}": {"get": {**_get_job(wait), "summary": "Alias of GET /jobs/{job_id}"}},
        "/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's timeline: every event of its stream",
                "security": _AUTHED,
                "parameters": [_path("job_id"), ORG_PARAMETER],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {"events": {"type": "array", "items": ref("Event")}},
                        },
                        "the events in order",
                    ),
                    **error_bodies(*_AUTHED_ERRORS, 404),
                },
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job; one that has already ended is returned unchanged",
                "security": _AUTHED,
                "parameters": [_path("job_id"), ORG_PARAMETER],
                "requestBody": _REASON_BODY,
                "responses": {
                    "200": json_body(ref("Job"), "the job, cancelled or as it ended"),
                    **error_bodies(*_AUTHED_ERRORS, 404, 409, 413),
                },
            }
        },
        "/runs/{run_id}": {
            "get": {
                "summary": "A suite's jobs and counts; with ?wait=N, held until every job ended",
                "security": _AUTHED,
                "parameters": [_path("run_id"), wait, ORG_PARAMETER],
                "responses": {
                    "200": json_body(ref("Run"), "the run"),
                    **error_bodies(*_AUTHED_ERRORS, 404),
                },
            }
        },
        "/runs/{run_id}/cancel": {
            "post": {
                "summary": "Cancel every job of a run that has not ended",
                "security": _AUTHED,
                "parameters": [_path("run_id"), ORG_PARAMETER],
                "requestBody": _REASON_BODY,
                "responses": {
                    "200": json_body(ref("Run"), "the run, its unfinished jobs cancelled"),
                    **error_bodies(*_AUTHED_ERRORS, 404, 409, 413),
                },
            }
        },
        "/runs/{run_id}/supersede": {
            "post": {
                "summary": "Cancel the unfinished jobs of the organisation's older runs that "
                "share this run's supersede_key",
                "security": _AUTHED,
                "parameters": [_path("run_id"), ORG_PARAMETER],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {
                                "run_id": {"type": "string", "format": "uuid"},
                                "supersede_key": {"type": ["string", "null"]},
                                "cancelled": {"type": "array", "items": ref("Job")},
                            },
                        },
                        "the jobs this call cancelled",
                    ),
                    **error_bodies(*_AUTHED_ERRORS, 404, 409),
                },
            }
        },
        "/flaky": {
            "get": {
                "summary": "Tests that passed after failing, most flaky first (test_history); "
                "?all=true lists every test",
                "security": _AUTHED,
                "parameters": [
                    ORG_PARAMETER,
                    _query("all", "every test, not only flaky ones", {"type": "boolean"}),
                    _query(
                        "limit",
                        "how many",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                ],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {
                                "tests": {"type": "array", "items": ref("TestHistory")}
                            },
                        },
                        "tests by flake rate",
                    ),
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/groups": {
            "get": {
                "summary": "Groups of jobs that share a device install",
                "security": _AUTHED,
                "parameters": [
                    ORG_PARAMETER,
                    _query(
                        "limit",
                        "how many",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                ],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {"groups": {"type": "array", "items": ref("Group")}},
                        },
                        "groups",
                    ),
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/devices": {
            "get": {
                "summary": "Device slots and what they hold",
                "security": _AUTHED,
                "parameters": [ORG_PARAMETER],
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {"devices": {"type": "array", "items": ref("Device")}},
                        },
                        "devices",
                    ),
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process is alive",
                "responses": {"200": json_body({"type": "object"}, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database answers and the projectors are not far behind",
                "responses": {
                    "200": json_body({"type": "object"}, "ready"),
                    "503": json_body(ref("Error"), "not ready: database or projector lag"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: with tokens, the token's organisation's figures "
                "and the fleet's, for a token with the metrics scope",
                "security": _AUTHED,
                "parameters": [ORG_PARAMETER],
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}},
                    **error_bodies(*_AUTHED_ERRORS),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def _operation_id(method: str, path: str) -> str:
    """``get_jobs_job_id`` for GET /jobs/{job_id}: every operation has one, for links."""
    words = [word.strip("{}").replace("-", "_").replace(".", "_") for word in path.split("/")]
    return "_".join([method, *filter(None, words)]) if path != "/" else f"{method}_dashboard"


def openapi_document(max_wait_s: float = 60.0) -> Json:
    """The document for a server whose longest ``?wait=`` is *max_wait_s*."""
    paths = {**_paths(max_wait_s), **BLOB_PATHS, **DASHBOARD_PATHS}
    for path, operations in paths.items():
        for method, operation in operations.items():
            operations[method] = {**operation, "operationId": _operation_id(method, path)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qgjob",
            "version": "1",
            "description": "Queue, group and run AppWright test jobs. Every error answers "
            '{"error": {"code", "message", "field"}}.',
        },
        "components": {
            "schemas": {**SCHEMAS, **BLOB_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }
