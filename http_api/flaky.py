"""Test history: per test, how often it ran, failed and passed only after failing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from http_api import reads
from http_api.inputs import query_choice, query_int
from http_api.services import services

__all__ = ["list_flaky"]


async def list_flaky(request: Request) -> JSONResponse:
    """The flaky tests, most flaky first; ``?all=true`` lists every test's history."""
    app = services(request)
    caller = await app.auth.caller(request)
    org_id = caller.org_for_read(request)
    every_test = query_choice(request, "all", ("true", "false")) == "true"
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    async with app.pool.connection() as conn:
        tests = await reads.test_history(conn, org_id, flaky_only=not every_test, limit=limit)
    return JSONResponse({"tests": tests})
