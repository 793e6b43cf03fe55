"""Jobs that name blobs: a submit may name only bundles and builds its organisation has.

A job's ``bundle`` and a ``build`` of the form ``sha256:<hex>`` name blobs uploaded with
PUT /blobs. Before a submit appends anything, each named blob must be the organisation's
own and of the right kind; then its retention restarts, so garbage collection leaves it
for the jobs that are about to run from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from http_api.errors import ApiError
from ledger.blobs import BlobKind, BlobStore, digest_of_reference, reference
from ledger.events import JobSubmitted

__all__ = ["claim_references"]

_BLOB_PREFIX = "sha256:"


async def claim_references(store: BlobStore, jobs: Sequence[JobSubmitted]) -> None:
    """Refuse, with a 4xx naming the field, jobs naming a blob their organisation has not
    uploaded as that kind; mark the blobs they name as referenced. *jobs* are one
    submit's, all of one organisation."""
    org_id = jobs[0].org_id
    wanted: dict[str, tuple[str, BlobKind]] = {}
    for job in jobs:
        if job.bundle is not None:
            digest = digest_of_reference(job.bundle)
            assert digest is not None, "JobSubmitted validates its bundle reference"
            wanted[digest] = ("bundle", BlobKind.BUNDLE)
        if job.build is not None and job.build.startswith(_BLOB_PREFIX):
            digest = digest_of_reference(job.build)
            if digest is None:
                raise ApiError(
                    400,
                    "invalid_field",
                    "build names an uploaded build as sha256:<64 lowercase hex digits> "
                    f"(got {job.build[:100]!r})",
                    field="build",
                )
            wanted[digest] = ("build", BlobKind.BUILD)
    for digest, (field, kind) in wanted.items():
        blob = await store.has(org_id, digest)
        if blob is None or blob.kind is not kind:
            raise _unknown(field, digest, kind)
    marked = await store.mark_referenced(org_id, wanted)
    for digest, (field, kind) in wanted.items():
        if digest not in marked:
            raise _unknown(field, digest, kind)


def _unknown(field: str, digest: str, kind: BlobKind) -> ApiError:
    return ApiError(
        422,
        "unknown_blob",
        f"{field} names {reference(digest)}, which this organisation has not uploaded as "
        f"a {kind.value}; upload it with PUT /blobs/{digest}?kind={kind.value} first",
        field=field,
    )
