"""Serving the API inside an event loop that other services share (``qgjobd up``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from http_api.http_protocol import BoundedHttpToolsProtocol

__all__ = ["serve_until"]


class _SharedLoopServer(uvicorn.Server):
    # The process's signal handling belongs to whoever runs the loop, not to uvicorn:
    # uvicorn would otherwise take SIGINT/SIGTERM and raise them again on shutdown.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(app: Starlette, *, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve *app* until *stop* is set, then shut down gracefully."""
    server = _SharedLoopServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            timeout_graceful_shutdown=5,
            http=BoundedHttpToolsProtocol,
        )
    )
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise OSError(f"the API could not listen on {host}:{port}")
