"""qgjobd: the qgjob server launcher.

``qgjobd up`` runs everything on one machine; each other subcommand runs one role, so
a deployment scales out by starting more API, projector and runner processes against
one PostgreSQL (``QGJOB_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ledger.embedded import EmbeddedCluster, database_url
from ledger.errors import QgjobError
from ledger.migrate import apply_migrations

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) / "pg"


def _db(args: argparse.Namespace) -> int:
    cluster = EmbeddedCluster(_data_dir(args))
    match args.action:
        case "start":
            print(cluster.start())
        case "stop":
            cluster.stop()
        case "status":
            url = cluster.status()
            print(f"running: {url}" if url else "stopped")
            return 0 if url else 1
        case "url":
            print(cluster.url())
    return 0


def _migrate(args: argparse.Namespace) -> int:
    applied = apply_migrations(database_url(_data_dir(args)))
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qgjobd",
        description="Run the qgjob server: API, projector and runners on one PostgreSQL.",
        epilog=(
            "QGJOB_DATABASE_URL names the PostgreSQL server to use; without it, qgjobd runs "
            "an embedded cluster with its files under DATA_DIR/pg."
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("QGJOB_DATA_DIR", ".qgjob"),
        help="where local state lives (default: $QGJOB_DATA_DIR or .qgjob)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="manage the embedded PostgreSQL cluster")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.set_defaults(run=_db)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(run=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=os.environ.get("QGJOB_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        sys.exit(run(args))
    except QgjobError as error:
        print(f"qgjobd: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
