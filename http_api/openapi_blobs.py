"""The OpenAPI description of the blob endpoints (http_api/blobs.py)."""

from __future__ import annotations

from http_api.openapi_schemas import ORG_PARAMETER, Json, error_bodies, json_body, ref
from ledger.blobs import BlobKind

__all__ = ["BLOB_PATHS", "BLOB_SCHEMAS"]

_AUTHED: list[Json] = [{"bearer": []}]
_DIGEST: Json = {
    "name": "sha256",
    "in": "path",
    "required": True,
    "description": "the SHA-256 of the content, 64 lowercase hex digits",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}


def _error(description: str) -> Json:
    return json_body(ref("Error"), description)


BLOB_SCHEMAS: Json = {
    "Blob": {
        "type": "object",
        "properties": {
            "sha256": {"type": "string"},
            "reference": {
                "type": "string",
                "description": "how a job names it: the bundle or build field's value",
            },
            "kind": {"type": "string", "enum": [kind.value for kind in BlobKind]},
            "size": {"type": "integer"},
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
}

BLOB_PATHS: Json = {
    "/blobs/{sha256}": {
        "put": {
            "summary": "Upload a test bundle or app build, named by its SHA-256; streamed",
            "security": _AUTHED,
            "parameters": [
                _DIGEST,
                ORG_PARAMETER,
                {
                    "name": "kind",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "enum": [kind.value for kind in BlobKind]},
                },
                {
                    "name": "name",
                    "in": "query",
                    "required": False,
                    "description": "the file name, e.g. app.apk (default: the digest)",
                    "schema": {"type": "string", "maxLength": 255},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {}},
                "description": "the content; a bundle is a gzip-compressed tar archive",
            },
            "responses": {
                "201": json_body(ref("Blob"), "stored"),
                "200": json_body(ref("Blob"), "already stored for this organisation"),
                **error_bodies(400, 401, 403),
                "409": _error("the content is already stored as the other kind"),
                "413": _error("larger than the kind's limit; nothing kept"),
                "422": _error(
                    "digest_mismatch: the content has another SHA-256; unsafe_archive: a "
                    "bundle entry would land outside its root; nothing kept"
                ),
                **error_bodies(503),
            },
        },
        "get": {
            "summary": "Download a blob, streamed; HEAD tells whether it is stored",
            "security": _AUTHED,
            "parameters": [_DIGEST, ORG_PARAMETER],
            "responses": {
                "200": {
                    "description": "the content (X-Blob-Kind and X-Blob-Name say what it is)",
                    "content": {"application/octet-stream": {}},
                },
                **error_bodies(400, 401, 403, 404, 503),
            },
        },
    },
}
