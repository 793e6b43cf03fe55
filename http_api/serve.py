"""Serving the API with uvicorn: what ``qgjobd api`` runs."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from http_api.app import create_app
from http_api.http_protocol import BoundedHttpToolsProtocol

__all__ = ["SHUTDOWN_GRACE_S", "run_api"]

#: Open long-polls and event streams get this long to finish when the server stops;
#: clients reconnect to another instance (or this one, restarted).
SHUTDOWN_GRACE_S = 5
_log = logging.getLogger("http_api")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_api(
    url: str,
    *,
    host: str,
    port: int,
    local_mode: bool,
    access_log: bool,
    grouping: str | None = None,
    max_wait_s: float = 60.0,
) -> int:
    """Serve the API for the migrated database at *url* until SIGINT or SIGTERM."""
    if local_mode and not _is_loopback(host):
        _log.warning(
            "local mode on %s, which is not a loopback address: anyone who can reach it "
            "can act for any organisation; use API tokens instead",
            host,
        )
    config = uvicorn.Config(
        create_app(url, local_mode=local_mode, grouping=grouping, max_wait_s=max_wait_s),
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        http=BoundedHttpToolsProtocol,
    )
    uvicorn.Server(config).run()
    return 0
