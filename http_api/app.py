"""The Starlette application: routes, error handling, and the services its lifespan opens.

``create_app(url, local_mode=...)`` builds an app for one database. The module attribute
``app`` is built on first access from the environment, so ``uvicorn http_api.app:app``
works as is (add ``--http http_api.http_protocol:BoundedHttpToolsProtocol`` for the bound
on request heads that ``qgjobd api`` has):

- ``QGJOB_DATABASE_URL`` names the database; without it, the embedded cluster under
  ``$QGJOB_DATA_DIR/pg`` (default ``.qgjob/pg``) is started. Migrations are applied.
- ``QGJOB_AUTH=local`` serves without tokens (for a loopback server); ``token``, the
  default, requires a per-organisation API token on every job request.
- ``QGJOB_GROUPING`` names the grouping strategy jobs are grouped by at submit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from http_api import blobs, dashboard, dashboard_views, flaky, jobs, ops, runs
from http_api.errors import exception_handlers
from http_api.metrics import RequestMetrics
from http_api.services import Services, Settings
from ledger.embedded import database_url
from ledger.migrate import apply_migrations

__all__ = ["AUTH_ENV", "DATA_DIR_ENV", "create_app", "create_app_from_environment", "routes"]

AUTH_ENV = "QGJOB_AUTH"
DATA_DIR_ENV = "QGJOB_DATA_DIR"

#: ``uvicorn http_api.app:app``'s app; see the module docstring and __getattr__ below.
app: Starlette


def routes() -> list[BaseRoute]:
    return [
        Route("/", dashboard.page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static"),
        Route("/dashboard/snapshot", dashboard.snapshot, methods=["GET"]),
        Route("/dashboard/changes", dashboard.changes, methods=["GET"]),
        Route("/dashboard/runs", dashboard_views.runs_view, methods=["GET"]),
        Route("/dashboard/runs/{run_id}", dashboard_views.run_view, methods=["GET"]),
        Route("/dashboard/timeline", dashboard_views.timeline_view, methods=["GET"]),
        Route("/dashboard/devices", dashboard_views.devices_view, methods=["GET"]),
        Route("/events/stream", dashboard.stream, methods=["GET"]),
        Route("/jobs", jobs.jobs_collection, methods=["GET", "POST"]),
        Route("/submit-job", jobs.submit_jobs, methods=["POST"]),
        Route("/jobs/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/status/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/jobs/{job_id}/events", jobs.job_events, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
        Route("/runs/{run_id}", jobs.get_run, methods=["GET"]),
        Route("/runs/{run_id}/cancel", runs.cancel_run, methods=["POST"]),
        Route("/runs/{run_id}/supersede", runs.supersede_runs, methods=["POST"]),
        Route("/flaky", flaky.list_flaky, methods=["GET"]),
        Route("/groups", jobs.list_groups, methods=["GET"]),
        Route("/devices", jobs.list_devices, methods=["GET"]),
        Route("/blobs/{sha256}", blobs.blob, methods=["GET", "PUT"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
    ]


def create_app(
    url: str,
    *,
    local_mode: bool,
    max_wait_s: float = 60.0,
    ready_max_lag_s: float = 30.0,
    pool_size: int = 10,
    pool_timeout_s: float = 5.0,
    grouping: str | None = None,
) -> Starlette:
    """The API for the database at *url* (already migrated).

    Raises UnknownStrategy when *grouping* names no grouping strategy.
    """
    settings = Settings(
        local_mode=local_mode,
        max_wait_s=max_wait_s,
        ready_max_lag_s=ready_max_lag_s,
        pool_size=pool_size,
        pool_timeout_s=pool_timeout_s,
        grouping=grouping,
    )
    services = Services(url, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with services.opened():
            yield

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(RequestMetrics, metrics=services.metrics)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def create_app_from_environment() -> Starlette:
    """The API configured from QGJOB_DATABASE_URL / QGJOB_DATA_DIR and QGJOB_AUTH."""
    auth = os.environ.get(AUTH_ENV, "token")
    if auth not in ("token", "local"):
        raise ValueError(f"{AUTH_ENV} must be 'token' or 'local', not {auth!r}")
    url = database_url(Path(os.environ.get(DATA_DIR_ENV, ".qgjob")) / "pg")
    apply_migrations(url)
    return create_app(url, local_mode=auth == "local")


def __getattr__(name: str) -> Starlette:
    # Built on first access, so importing create_app neither starts a database nor migrates.
    if name == "app":
        global app
        app = create_app_from_environment()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
