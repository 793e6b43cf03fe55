"""The HTTP API: a thin Starlette layer over the ledger (writes) and the projections (reads).

``create_app`` builds the app for one database; ``uvicorn http_api.app:app`` serves one
configured from the environment (see http_api/app.py).
"""

from http_api.app import create_app

__all__ = ["create_app"]
