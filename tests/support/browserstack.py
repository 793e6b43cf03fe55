"""A stand-in for BrowserStack's app upload endpoint on loopback, counting what arrives."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

__all__ = ["CREDENTIALS", "FakeBrowserStack", "Uploaded", "fake_browserstack"]

#: The username and access key the fake accepts.
CREDENTIALS = ("qgjob-user", "qgjob-key")


@attrs.frozen(kw_only=True)
class Uploaded:
    """One upload as BrowserStack saw it: a file's name and content, or a URL."""

    app_url: str
    filename: str | None
    content: bytes | None
    url: str | None


@attrs.define
class FakeBrowserStack:
    upload_url: str
    uploads: list[Uploaded] = attrs.field(factory=list)


@contextmanager
def fake_browserstack() -> Iterator[FakeBrowserStack]:
    """Answers ``POST /app-automate/upload`` as BrowserStack does, with a new ``bs://``
    id per upload; refuses other credentials with 401."""
    lock = threading.Lock()
    expected = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Authorization") != expected:
                self._answer(401, {"error": "Authentication failed"})
                return
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            fields = {part.get_param("name", header="content-disposition"): part
                      for part in message.iter_parts()}
            file, url = fields.get("file"), fields.get("url")
            with lock:
                app_url = f"bs://fake{len(fake.uploads) + 1:020d}"
                fake.uploads.append(
                    Uploaded(
                        app_url=app_url,
                        filename=file.get_filename() if file else None,
                        content=file.get_payload(decode=True) if file else None,
                        url=url.get_content().strip() if url else None,
                    )
                )
            self._answer(200, {"app_url": app_url, "custom_id": None})

        def _answer(self, status: int, document: object) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeBrowserStack(
        upload_url=f"http://127.0.0.1:{server.server_address[1]}/app-automate/upload"
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
