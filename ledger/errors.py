"""Every error qgjob raises on purpose derives from QgjobError.

Each class's docstring is its default message.
"""

from __future__ import annotations

__all__ = [
    "BlobCorrupt",
    "BlobNotFound",
    "BlobRefused",
    "BlobTooLarge",
    "ConcurrencyConflict",
    "DigestMismatch",
    "EmbeddedClusterError",
    "InfrastructureError",
    "InvalidEvent",
    "MigrationError",
    "NotFound",
    "QgjobError",
    "TransitionRefused",
    "UnsafeArchive",
]


class QgjobError(Exception):
    """Something went wrong in qgjob."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConcurrencyConflict(QgjobError):
    """Another writer appended to the stream first; read it again and retry."""


class TransitionRefused(QgjobError):
    """The job's history does not allow this transition."""


class InvalidEvent(QgjobError):
    """The event does not match its schema."""

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        #: The offending field's dotted path, when one field is to blame.
        self.field = field


class NotFound(QgjobError):
    """No such thing."""


class MigrationError(QgjobError):
    """The database schema cannot be brought up to date."""


class EmbeddedClusterError(QgjobError):
    """The embedded PostgreSQL cluster could not be started or is not running."""


class InfrastructureError(QgjobError):
    """The device, build or executor failed; the tests themselves did not run to a verdict."""


class BlobNotFound(NotFound):
    """This organisation has no blob with that digest."""


class BlobRefused(QgjobError):
    """The upload was refused; nothing of it was kept."""


class BlobTooLarge(BlobRefused):
    """The blob is larger than its kind allows."""


class DigestMismatch(BlobRefused):
    """The content's SHA-256 is not the digest it was sent or asked for as."""


class UnsafeArchive(BlobRefused):
    """The archive holds a path that would land outside its root, or a kind of entry a
    bundle may not hold."""


class BlobCorrupt(InfrastructureError):
    """A fetched blob does not match its digest, or its archive is unsafe to unpack; no
    test was run from it."""
