"""Ledger appends per second against raw single-row INSERTs, with 1 and 8 writers.

Each writer is its own process with one connection, appending one event to a new
stream per transaction (autocommit), for a fixed time. The raw baseline inserts the
same columns into a plain table with no constraints, through the same driver, in the
same run against the same server. Last line:
``RESULT append_1=… raw_1=… ratio_1=… append_8=… raw_8=… ratio_8=…``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from bench._processes import total_over_processes
from ledger.codec import converter, encode
from ledger.events import JobSubmitted, Metadata, Target
from ledger.store import append

SECONDS = 4.0
EVENT = JobSubmitted(
    org_id="bench", app_version_id="v1", test_path="tests/a.spec.js", target=Target.EMULATOR
)
METADATA = Metadata(org_id="bench", actor="bench")

RAW_TABLE = """
create table raw_events (
    position    bigint generated always as identity,
    stream_id   uuid, version integer, type text, data jsonb, metadata jsonb,
    recorded_at timestamptz default clock_timestamp(),
    txid        xid8 default pg_current_xact_id()
)
"""
RAW_INSERT = (
    "insert into raw_events (stream_id, version, type, data, metadata) "
    "values (%s, %s, %s, %s, %s)"
)


async def _ledger_writer(url: str, deadline: float) -> int:
    count = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            await append(conn, uuid.uuid4(), 0, [EVENT], METADATA)
            count += 1
    return count


async def _raw_writer(url: str, deadline: float) -> int:
    type_name, data = encode(EVENT)
    metadata = converter.unstructure(METADATA)
    count = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            await conn.execute(
                RAW_INSERT, (uuid.uuid4(), 1, type_name, Jsonb(data), Jsonb(metadata))
            )
            count += 1
    return count


def _writer(kind: str, url: str, start_at: float, results: multiprocessing.Queue[int]) -> None:
    time.sleep(max(0.0, start_at - time.monotonic()))
    run = _ledger_writer if kind == "append" else _raw_writer
    results.put(asyncio.run(run(url, start_at + SECONDS)))


def measure(kind: str, url: str, writers: int) -> float:
    start_at = time.monotonic() + 1.0  # let every process connect first
    return total_over_processes(_writer, [(kind, url, start_at)] * writers) / SECONDS


def main() -> None:
    figures: dict[str, float] = {}
    with bench_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RAW_TABLE)
        for writers in (1, 8):
            # Alternate the two so neither always runs on a warmer or fuller server.
            figures[f"append_{writers}"] = measure("append", url, writers)
            figures[f"raw_{writers}"] = measure("raw", url, writers)
            figures[f"ratio_{writers}"] = figures[f"append_{writers}"] / figures[f"raw_{writers}"]
            print(
                f"{writers} writer(s): ledger append {figures[f'append_{writers}']:,.0f}/s, "
                f"raw insert {figures[f'raw_{writers}']:,.0f}/s, "
                f"ratio {figures[f'ratio_{writers}']:.2f}"
            )
    print(
        "RESULT "
        + " ".join(
            f"{key}={value:.2f}" if key.startswith("ratio") else f"{key}={value:.0f}"
            for key, value in figures.items()
        )
    )


if __name__ == "__main__":
    main()
