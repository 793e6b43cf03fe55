"""uvicorn's httptools protocol with a bound on the size of a request's head.

httptools (llhttp) sets no limit of its own on the request line and headers, so a client
could make the server hold megabytes of headers per connection. This protocol answers
431 and closes the connection once a head grows past MAX_HEAD_BYTES. ``qgjobd api`` and
``qgjobd up`` serve with it; with plain uvicorn, pass
``--http http_api.http_protocol:BoundedHttpToolsProtocol``.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

#: The most bytes a request line and its headers may take, as in h11's default limit
#: times four: ample for tokens and cookies, far short of what could hurt the server.
MAX_HEAD_BYTES = 64 * 1024
_log = logging.getLogger("http_api")
_TOO_LARGE = (
    b'{"error": {"code": "headers_too_large", "message": "the request line and headers '
    b"are larger than " + str(MAX_HEAD_BYTES).encode() + b' bytes", "field": null}}'
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _reading_head = False
    _head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._reading_head or self.transport.is_closing():
            return
        # Everything fed since the message began is head while the head is unfinished
        # (give or take the end of a pipelined request before it).
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            _log.warning("refused a request whose head is over %d bytes", MAX_HEAD_BYTES)
            self._reading_head = False
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[431],
                        b"content-type: application/json\r\n",
                        b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n",
                        b"connection: close\r\n\r\n",
                        _TOO_LARGE,
                    ]
                )
            )
            self.transport.close()
