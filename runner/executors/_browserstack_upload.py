"""Uploading a build to BrowserStack App Automate, for the ``bs://`` id runs then use.

AppWright would upload the build itself on every run; uploading it here, once, lets the
runner record the id and reuse it across batches and hosts (runner/uploads.py). The
credentials are AppWright's own: BROWSERSTACK_USERNAME and BROWSERSTACK_ACCESS_KEY.
A file is streamed as a multipart body, never read whole; a URL is handed to BrowserStack
to fetch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from ledger.errors import InfrastructureError

__all__ = ["DEFAULT_UPLOAD_URL", "upload_build"]

DEFAULT_UPLOAD_URL = "https://api-cloud.browserstack.com/app-automate/upload"
#: Seconds without progress after which an upload is abandoned.
_UPLOAD_TIMEOUT_S = 300.0
_CHUNK_BYTES = 1 << 20
_URL = re.compile(r"^https?://", re.IGNORECASE)


async def upload_build(build: str, *, upload_url: str) -> str:
    """Upload *build* (a local path or an http(s) URL); returns its ``bs://`` id.

    Raises InfrastructureError naming what went wrong: no credentials, a refusal, or an
    answer without an ``app_url``.
    """
    username = os.environ.get("BROWSERSTACK_USERNAME")
    access_key = os.environ.get("BROWSERSTACK_ACCESS_KEY")
    if not username or not access_key:
        raise InfrastructureError(
            "cannot upload the build to BrowserStack: set BROWSERSTACK_USERNAME and "
            "BROWSERSTACK_ACCESS_KEY on the device host"
        )
    token = base64.b64encode(f"{username}:{access_key}".encode()).decode()
    return await asyncio.to_thread(_post, build, upload_url, token)


def _post(build: str, upload_url: str, token: str) -> str:
    boundary = uuid.uuid4().hex
    if _URL.match(build):
        body = _field(boundary, "url", build) + _closing(boundary)
        size, data = len(body), iter([body])
    else:
        path = Path(build)
        head = _file_head(boundary, path.name)
        tail = b"\r\n" + _closing(boundary)
        size = len(head) + path.stat().st_size + len(tail)
        data = _streamed(head, path, tail)
    request = urllib.request.Request(
        upload_url,
        data=data,
        method="POST",
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(size),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_UPLOAD_TIMEOUT_S) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        detail = error.read(500).decode(errors="replace")
        raise InfrastructureError(
            f"BrowserStack refused the build upload ({error.code}): {detail}"
        ) from error
    except (OSError, ValueError) as error:
        raise InfrastructureError(f"cannot upload the build to BrowserStack: {error}") from error
    app_url = answer.get("app_url") if isinstance(answer, dict) else None
    if not isinstance(app_url, str) or not app_url.startswith("bs://"):
        raise InfrastructureError(f"BrowserStack's upload answer has no bs:// app_url: {answer}")
    return app_url


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def _file_head(boundary: str, filename: str) -> bytes:
    quoted = filename.replace('"', "%22")
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def _streamed(head: bytes, path: Path, tail: bytes) -> Iterator[bytes]:
    yield head
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            yield chunk
    yield tail
