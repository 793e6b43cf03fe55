"""The write side: event types, their codec, the event store and the transition rules.

Only this package inserts into the ``events`` table: the store, and the database
function ``append_events`` (migrations/034_append_events_json.sql) that the API's submit and
the runner's claim call so as to append inside their own statements.
"""

from ledger.codec import decode, encode
from ledger.decisions import TERMINAL, JobState, JobStatus, decide, fold
from ledger.errors import (
    ConcurrencyConflict,
    InfrastructureError,
    InvalidEvent,
    MigrationError,
    NotFound,
    QgjobError,
    TransitionRefused,
)
from ledger.store import (
    Appended,
    Checkpoint,
    RecordedEvent,
    StreamWrite,
    append,
    append_many,
    head,
    read_after,
    read_stream,
    stream_version,
)
from ledger.wakeup import Channel, Listener, Notifier

__all__ = [
    "TERMINAL",
    "Appended",
    "Channel",
    "Checkpoint",
    "ConcurrencyConflict",
    "InfrastructureError",
    "InvalidEvent",
    "JobState",
    "JobStatus",
    "Listener",
    "MigrationError",
    "NotFound",
    "Notifier",
    "QgjobError",
    "RecordedEvent",
    "StreamWrite",
    "TransitionRefused",
    "append",
    "append_many",
    "decide",
    "decode",
    "encode",
    "fold",
    "head",
    "read_after",
    "read_stream",
    "stream_version",
]
