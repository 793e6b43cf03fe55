"""The projector's two qgjobd subcommands: ``projector`` and ``rebuild [NAME]``."""

from __future__ import annotations

import argparse
import asyncio

from projections.projector import Projector
from projections.rebuild import rebuild

__all__ = ["add_projector_arguments", "projector_from_args", "run_rebuild"]


def add_projector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="main", help="the projection's checkpoint name (default: main)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between reads when no notification comes (default: 1)",
    )


def projector_from_args(url: str, args: argparse.Namespace) -> Projector:
    return Projector(url, name=args.name, poll_interval=args.poll_interval)


def run_rebuild(url: str, name: str) -> int:
    replayed = asyncio.run(rebuild(url, name))
    print(f"rebuilt projection {name} from {replayed} events")
    return 0
