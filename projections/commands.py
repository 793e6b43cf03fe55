"""The projector's two qgjobd subcommands: ``projector`` and ``rebuild [NAME]``."""

from __future__ import annotations

import argparse
import asyncio
import signal

from projections.projector import Projector
from projections.rebuild import rebuild

__all__ = ["add_projector_arguments", "run_projector", "run_rebuild"]


def add_projector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="main", help="the projection's checkpoint name (default: main)"
    )
    parser.add_argument(
        "--grouping",
        help="grouping strategy: app_version, repo, tag, priority or module:callable "
        "(default: $QGJOB_GROUPING or app_version)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between reads when no notification comes (default: 1)",
    )


def run_projector(url: str, args: argparse.Namespace) -> int:
    """Project until SIGTERM or SIGINT; the batch in hand is finished first."""
    projector = Projector(
        url, name=args.name, grouping=args.grouping, poll_interval=args.poll_interval
    )
    asyncio.run(_until_signalled(projector))
    return 0


async def _until_signalled(projector: Projector) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await projector.run(stop)


def run_rebuild(url: str, name: str, grouping: str | None = None) -> int:
    replayed = asyncio.run(rebuild(url, name, grouping=grouping))
    print(f"rebuilt projection {name} from {replayed} events")
    return 0
