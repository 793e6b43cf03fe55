"""The OpenAPI paths of the dashboard's JSON routes and change stream
(http_api/dashboard_views.py, http_api/dashboard.py)."""

from __future__ import annotations

from http_api.openapi_schemas import ORG_PARAMETER, Json, error_bodies, json_body, ref

__all__ = ["DASHBOARD_PATHS"]

_AUTHED: list[Json] = [{"bearer": []}]
_TIME: Json = {"type": "string", "format": "date-time"}
_COUNTS: Json = {"type": "object", "additionalProperties": {"type": "integer"}}

_RUN_SUMMARY: Json = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string", "format": "uuid"},
        "org_id": {"type": "string"},
        "counts": _COUNTS,
        "jobs": {"type": "integer"},
        "submitted_at": _TIME,
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "repo": {"type": ["string", "null"]},
        "commit": {"type": ["string", "null"]},
        "build": {"type": ["string", "null"]},
        "app_version_id": {"type": "string"},
    },
}
_BAR: Json = {
    "type": "object",
    "description": "an install (from the batch's claim to AppInstalled) or an attempt "
    "(from JobStarted to its verdict; end null while it runs)",
    "properties": {
        "kind": {"enum": ["install", "attempt"]},
        "device_id": {"type": "string", "format": "uuid"},
        "start": _TIME,
        "end": {"type": ["string", "null"], "format": "date-time"},
        "outcome": {
            "enum": [
                "install",
                "running",
                "passed",
                "failed",
                "error",
                "retried",
                "handed_back",
                "lease_expired",
                "cancelled",
                "timed_out",
            ]
        },
        "job_id": {"type": "string", "format": "uuid"},
        "attempt": {"type": "integer"},
        "retried": {"type": "boolean"},
        "test_path": {"type": "string"},
        "run_id": {"type": ["string", "null"], "format": "uuid"},
        "app_version_id": {"type": "string"},
        "group_id": {"type": ["string", "null"], "format": "uuid"},
    },
}
_LANE: Json = {
    "type": "object",
    "description": "a device slot the caller's organisation used (any in local mode)",
    "properties": {
        "device_id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "target": {"type": "string"},
        "capabilities": {"type": "object"},
        "state": {"type": "string"},
        "installed_apps": {"type": "array", "items": {"type": "string"}},
        "utilisation": {"type": "number", "description": "share of the last hour busy"},
    },
}


def _get(summary: str, parameters: list[Json], body: Json, what: str, *errors: int) -> Json:
    return {
        "get": {
            "summary": summary,
            "security": _AUTHED,
            "parameters": parameters,
            # 400: a bad query parameter (every route takes an org).
            "responses": {
                "200": json_body(body, what),
                **error_bodies(400, 401, 403, *sorted(set(errors) - {400})),
            },
        }
    }


DASHBOARD_PATHS: Json = {
    "/dashboard/changes": {
        "get": {
            "summary": "Server-sent events: `changed` now and whenever the projections change",
            "security": _AUTHED,
            "parameters": [ORG_PARAMETER],
            "responses": {
                "200": {"description": "an event stream", "content": {"text/event-stream": {}}},
                **error_bodies(400, 401, 403),
            },
        }
    },
    "/dashboard/runs": _get(
        "Recent runs, newest first, with their jobs by status",
        [
            ORG_PARAMETER,
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            },
        ],
        {
            "type": "object",
            "properties": {
                "generated_at": _TIME,
                "runs": {"type": "array", "items": _RUN_SUMMARY},
            },
        },
        "runs",
        400,
    ),
    "/dashboard/runs/{run_id}": _get(
        "One run: progress, jobs with per-test results, per-profile breakdown",
        [
            ORG_PARAMETER,
            {
                "name": "run_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            },
        ],
        {
            "allOf": [ref("Run")],
            "properties": {
                "progress": {"type": "number", "description": "share of jobs ended, 0 to 1"},
                "profiles": {"type": "array", "items": {"type": "object"}},
                "submitted_at": _TIME,
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "the run",
        400,
        404,
    ),
    "/dashboard/timeline": _get(
        "The device timeline: lanes (slots) and bars (installs, attempts) over a window",
        [
            ORG_PARAMETER,
            {
                "name": "window",
                "in": "query",
                "required": False,
                "description": "the last this many seconds",
                "schema": {"type": "integer", "minimum": 60, "maximum": 604800, "default": 3600},
            },
            {
                "name": "run",
                "in": "query",
                "required": False,
                "description": "show this run's span, installs and attempts only",
                "schema": {"type": "string", "format": "uuid"},
            },
        ],
        {
            "type": "object",
            "properties": {
                "since": _TIME,
                "until": _TIME,
                "lanes": {"type": "array", "items": _LANE},
                "bars": {"type": "array", "items": _BAR},
            },
        },
        "lanes and bars",
        400,
        404,
    ),
    "/dashboard/devices": _get(
        "Device slots with utilisation over the last hour; the queue by target and profile",
        [ORG_PARAMETER],
        {
            "type": "object",
            "properties": {
                "devices": {"type": "array", "items": _LANE},
                "queue": {"type": "array", "items": {"type": "object"}},
            },
        },
        "devices and queue",
    ),
}
