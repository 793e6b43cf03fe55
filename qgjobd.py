"""qgjobd: the qgjob server launcher.

``qgjobd up`` runs everything on one machine; each other subcommand runs one role, so
a deployment scales out by starting more API, projector and runner processes against
one PostgreSQL (``QGJOB_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

try:
    import attrs
    import psycopg
    import uvloop

    from ledger.embedded import DATABASE_URL_ENV, EmbeddedCluster, database_url
    from ledger.errors import QgjobError
    from ledger.migrate import apply_migrations
except ModuleNotFoundError as missing:  # `pip install qgjob` is the CLI alone
    sys.exit(f"qgjobd: {missing.name} is missing: the server is pip install 'qgjob[server]'")

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

#: The address ``up`` and ``api`` bind by default; the container image sets 0.0.0.0.
HOST_ENV = "QGJOB_HOST"
#: How long a role waits at start for an external PostgreSQL to accept connections:
#: services started together (a compose file) come up in any order.
DATABASE_WAIT_S = 60.0
_log = logging.getLogger("qgjobd")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) / "pg"


def _database(args: argparse.Namespace) -> str:
    """The database's URL, once it accepts connections: the embedded one is started."""
    with _sigterm_interrupts():
        url = database_url(_data_dir(args))
        if os.environ.get(DATABASE_URL_ENV):
            _wait_for_database(url, DATABASE_WAIT_S)
    return url


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM interrupts what runs inside, as Ctrl-C does.

    A container's PID 1 ignores a signal it has no handler for, and the services install
    theirs only once they run: without this, `docker stop` would wait out its grace.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_database(url: str, timeout: float) -> None:
    # libpq reports "not up yet" and "wrong password" alike, so every failure is retried
    # until the deadline and each new reason is logged as it comes.
    deadline = time.monotonic() + timeout
    reported = ""
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise QgjobError(
                    f"the database did not accept a connection within {timeout:g} s: {error}"
                ) from None
            if str(error) != reported:
                reported = str(error)
                _log.info("waiting for the database: %s", reported)
            time.sleep(1)


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
    applied = apply_migrations(_database(args))
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def _api(args: argparse.Namespace) -> int:
    from http_api.serve import run_api

    url = _database(args)
    apply_migrations(url)
    local_mode = args.auth == "local"
    return run_api(
        url,
        host=args.host,
        port=args.port,
        local_mode=local_mode,
        access_log=args.access_log,
        grouping=args.grouping,
    )


def _token(args: argparse.Namespace) -> int:
    from http_api.auth import create_token

    url = _database(args)
    apply_migrations(url)
    try:
        print(create_token(url, args.org, label=args.label))
    except ValueError as error:
        print(f"qgjobd: --org: {error}", file=sys.stderr)
        return 2
    return 0


def _runner(args: argparse.Namespace) -> int:
    from runner.agent import run_agent
    from runner.cli import config_from_args

    config = config_from_args(args)
    url = _database(args)
    apply_migrations(url)
    return run_until_signalled(functools.partial(run_agent, url, config))


def _projector(args: argparse.Namespace) -> int:
    from projections.commands import projector_from_args

    url = _database(args)
    apply_migrations(url)
    return run_until_signalled(projector_from_args(url, args).run)


def _rebuild(args: argparse.Namespace) -> int:
    from projections.commands import run_rebuild

    url = _database(args)
    apply_migrations(url)
    return run_rebuild(url, args.name)


#: The machine ``qgjobd up`` pretends to have: simulated devices, clearly labelled.
UP_SLOTS = (
    "emulator/android:2,emulator/ios:1,device/android:1,browserstack/android:1,browserstack/ios:1"
)
UP_SIMULATION = "install_s=2,test_s=1.5,failure_rate=0.05,flake_rate=0.05"


def _up(args: argparse.Namespace) -> int:
    from http_api.app import create_app
    from http_api.embedded_server import serve_until
    from projections.projector import Projector
    from projections.transition_log import log_transitions
    from runner.agent import run_agent
    from runner.config import AgentConfig, slots_from_spec
    from runner.executors import SimulatedExecutor

    try:
        simulated = attrs.asdict(SimulatedExecutor.from_spec(args.simulated))
    except ValueError as error:
        print(f"qgjobd: --simulated: {error}", file=sys.stderr)
        return 2
    config = AgentConfig(name="local", slots=slots_from_spec(args.slots), simulated=simulated)
    _log.info(
        "qgjob on http://%s:%d in local mode: no API tokens needed, every org is served. "
        "Devices are SIMULATED (%s; %s). Ctrl-C stops everything.",
        args.host, args.port, args.slots, args.simulated,
    )

    async def everything(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as services:
            services.create_task(Projector(url).run(stop))
            services.create_task(run_agent(url, config, stop))
            services.create_task(log_transitions(url, stop))
            api = create_app(url, local_mode=True)
            services.create_task(serve_until(api, host=args.host, port=args.port, stop=stop))

    # Ctrl-C stops everything, the embedded PostgreSQL too, unless it was running before.
    cluster = None if os.environ.get(DATABASE_URL_ENV) else EmbeddedCluster(_data_dir(args))
    started_here = cluster is not None and cluster.status() is None
    url = _database(args)
    try:
        apply_migrations(url)
        return run_until_signalled(everything)
    finally:
        if started_here and cluster is not None:
            cluster.stop()


def run_until_signalled(service: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run *service* until SIGINT or SIGTERM sets its stop event and it has wound down."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await service(stop)
        except BaseException:
            stop.set()
            raise

    uvloop.run(main())
    return 0


def _add_address_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV, "127.0.0.1"),
        help=f"address to bind (default: ${HOST_ENV} or 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")


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

    up = commands.add_parser(
        "up", help="run everything locally: database, API, projector, simulated devices"
    )
    _add_address_arguments(up)
    up.add_argument(
        "--slots", default=UP_SLOTS, help=f"simulated device slots (default: {UP_SLOTS})"
    )
    up.add_argument(
        "--simulated",
        default=UP_SIMULATION,
        metavar="OPTIONS",
        help=f"simulated executor options (default: {UP_SIMULATION})",
    )
    # Also after the subcommand, as in `qgjobd up --data-dir DIR`.
    up.add_argument("--data-dir", default=argparse.SUPPRESS, help="as --data-dir above")
    up.set_defaults(run=_up)

    from projections.commands import add_projector_arguments

    projector = commands.add_parser("projector", help="keep the projections up to date")
    add_projector_arguments(projector)
    projector.set_defaults(run=_projector)
    rebuild = commands.add_parser(
        "rebuild", help="replay the ledger into a projection's tables while it keeps running"
    )
    rebuild.add_argument("name", nargs="?", default="main", help="projection (default: main)")
    rebuild.set_defaults(run=_rebuild)

    from runner.cli import add_arguments as add_runner_arguments

    runner = commands.add_parser("runner", help="run a device agent (slots, executor)")
    add_runner_arguments(runner)
    runner.set_defaults(run=_runner)

    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)")
    _add_address_arguments(api)
    api.add_argument(
        "--auth",
        choices=["token", "local"],
        default=os.environ.get("QGJOB_AUTH", "token"),
        help="token: per-organisation API tokens (default); local: no tokens, for a "
        "loopback server (default from $QGJOB_AUTH)",
    )
    api.add_argument("--access-log", action="store_true", help="log every request")
    api.add_argument(
        "--grouping",
        help="grouping strategy jobs are grouped by as they are submitted: app_version, "
        "repo, tag, priority or module:callable (default: $QGJOB_GROUPING or app_version)",
    )
    api.set_defaults(run=_api)

    token = commands.add_parser("token", help="manage API tokens")
    token_actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    token_create = token_actions.add_parser(
        "create", help="make a token for an organisation and print it (shown only once)"
    )
    token_create.add_argument("--org", required=True, help="the organisation it acts for")
    token_create.add_argument("--label", help="a note saying who or what uses it")
    token_create.set_defaults(run=_token)
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
