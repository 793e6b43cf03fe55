"""The blob endpoints: upload a bundle or build by digest, check for it, download it.

``PUT /blobs/{sha256}?kind=build|bundle&name=app.apk`` streams the body into the store,
which hashes it on the way and keeps nothing unless the digest and size are right; a test
bundle is also checked entry by entry as it passes (ledger/bundles.py). ``HEAD`` and
``GET`` answer for the caller's organisation only: another organisation's digest is a 404,
as if it did not exist.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from http_api.auth import Caller
from http_api.errors import ApiError
from http_api.inputs import query_choice, query_text
from http_api.services import services
from http_api.views import Json
from ledger.blobs import Blob, BlobKind, is_digest, reference
from ledger.bundles import BundleChecker
from ledger.errors import BlobTooLarge, DigestMismatch, UnsafeArchive

__all__ = ["get_blob", "put_blob"]

_KINDS = tuple(kind.value for kind in BlobKind)
_MAX_NAME = 255
_FILE_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]+$")


async def put_blob(request: Request) -> JSONResponse:
    """Store the body as the blob *sha256* of the caller's organisation."""
    app = services(request)
    org_id = _org(await app.auth.caller(request), request)
    sha256 = _digest(request)
    kind_text = query_choice(request, "kind", _KINDS)
    if kind_text is None:
        raise ApiError(400, "invalid_query", f"kind is required: {', '.join(_KINDS)}", field="kind")
    kind = BlobKind(kind_text)
    name = query_text(request, "name", max_len=_MAX_NAME) or sha256
    if not _FILE_NAME.match(name) or name in (".", ".."):
        raise ApiError(
            400,
            "invalid_query",
            "name must be a file name: printable characters, without '/' or '\\'",
            field="name",
        )
    limit = app.settings.blob_limits[kind]
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(kind, limit)
    body: AsyncIterable[bytes] = request.stream()
    if kind is BlobKind.BUNDLE:
        body = _checked_bundle(body)
    try:
        blob, created = await app.blobs.put(
            org_id, sha256, body, kind=kind, name=name, max_size=limit
        )
    except BlobTooLarge:
        raise _too_large(kind, limit) from None
    except DigestMismatch as error:
        raise ApiError(422, "digest_mismatch", error.message, field="sha256") from None
    except UnsafeArchive as error:
        raise ApiError(422, "unsafe_archive", error.message, field="body") from None
    if blob.kind is not kind:
        raise ApiError(
            409,
            "kind_conflict",
            f"this content is already stored as a {blob.kind.value}, not a {kind.value}",
            field="kind",
        )
    return JSONResponse(_document(blob), status_code=201 if created else 200)


async def get_blob(request: Request) -> Response:
    """The blob's content, streamed; HEAD answers whether it is stored, and its size."""
    app = services(request)
    org_id = _org(await app.auth.caller(request), request)
    sha256 = _digest(request)
    blob = await app.blobs.has(org_id, sha256)
    if blob is None:
        raise ApiError(404, "blob_not_found", f"no blob {sha256}", field="sha256")
    headers = {
        "content-length": str(blob.size),
        "etag": f'"{sha256}"',
        "x-blob-kind": blob.kind.value,
        # Percent-encoded: a header holds Latin-1 only, and a file name may hold anything.
        "x-blob-name": urllib.parse.quote(blob.name),
    }
    if request.method == "HEAD":
        return Response(headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        app.blobs.open(org_id, sha256), headers=headers, media_type="application/octet-stream"
    )


def _org(caller: Caller, request: Request) -> str:
    org_id = caller.org_for_read(request)
    if org_id is None:
        raise ApiError(400, "invalid_query", "org is required for blobs in local mode", field="org")
    return org_id


def _digest(request: Request) -> str:
    sha256: str = request.path_params["sha256"]
    if not is_digest(sha256):
        raise ApiError(
            400,
            "invalid_digest",
            f"sha256 must be 64 lowercase hex digits (got {sha256[:80]!r})",
            field="sha256",
        )
    return sha256


def _too_large(kind: BlobKind, limit: int) -> ApiError:
    return ApiError(
        413,
        "blob_too_large",
        f"a {kind.value} may be at most {limit} bytes",
        field="body",
    )


async def _checked_bundle(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    checker = BundleChecker()
    async for chunk in chunks:
        checker.feed(chunk)
        yield chunk
    checker.finish()


def _document(blob: Blob) -> Json:
    return {
        "sha256": blob.sha256,
        "reference": reference(blob.sha256),
        "kind": blob.kind.value,
        "size": blob.size,
        "name": blob.name,
        "created_at": blob.created_at.isoformat(),
    }
