"""Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from http_api.errors import error_response
from http_api.metrics import CONTENT_TYPE
from http_api.openapi import openapi_document
from http_api.services import services
from http_api.tokens import Scope
from ledger.sqlfile import load_queries

__all__ = ["healthz", "metrics", "openapi", "readyz"]

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
#: How long /readyz waits for a database connection before calling it unreachable.
_READY_TIMEOUT_S = 2.0


async def healthz(_: Request) -> JSONResponse:
    """The process is alive (no database involved)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to serve: the database answers and every projector is close to the ledger's head."""
    app = services(request)
    try:
        async with app.pool.connection(timeout=_READY_TIMEOUT_S) as conn:
            cursor = await conn.execute(_QUERIES["projector_lag"])
            lag = await cursor.fetchall()
    except psycopg.Error as error:
        return error_response(
            503, "database_unavailable", f"the database cannot be reached: {error}".strip()
        )
    bound = app.settings.ready_max_lag_s
    behind = [f"{name} ({seconds:.1f} s)" for name, _, seconds, _ in lag if seconds > bound]
    if behind:
        return error_response(
            503,
            "projector_lagging",
            f"projections are more than {bound:g} s behind the ledger: {', '.join(behind)}",
        )
    projectors = {
        name: {"events_behind": events, "seconds_behind": seconds, "running": running}
        for name, events, seconds, running in lag
    }
    return JSONResponse({"status": "ready", "projectors": projectors})


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format; with tokens, the token's
    organisation's figures and the fleet's, and only for a token with the metrics scope."""
    app = services(request)
    caller = await app.auth.caller(request, Scope.METRICS)
    async with app.pool.connection() as conn:
        body = await app.metrics.render(conn, caller.org_for_read(request))
    return Response(body, media_type=CONTENT_TYPE)


async def openapi(request: Request) -> JSONResponse:
    """This document: the API described as OpenAPI 3.1."""
    return JSONResponse(openapi_document(services(request).settings.max_wait_s))
