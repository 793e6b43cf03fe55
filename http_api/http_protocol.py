"""uvicorn's httptools protocol with a bound on the size of a request's head.

httptools (llhttp) sets no limit of its own on the request line and headers, so a client
could make the server hold megabytes of headers per connection. This protocol answers
431 and closes the connection once a head is larger than MAX_HEAD_BYTES: it counts the
request line and headers as the parser hands them over, and, while a head is still
incomplete, the bytes received for it, so that an endless head is cut off too.
``qgjobd api`` and ``qgjobd up`` serve with it; with plain uvicorn, pass
``--http http_api.http_protocol:BoundedHttpToolsProtocol``.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

#: The most bytes a request line and its headers may take: h11's default limit times
#: four, ample for tokens and cookies, far short of what could hurt the server.
MAX_HEAD_BYTES = 64 * 1024
_log = logging.getLogger("http_api")
_TOO_LARGE = (
    b'{"error": {"code": "headers_too_large", "message": "the request line and headers '
    b'are larger than ' + str(MAX_HEAD_BYTES).encode() + b' bytes", "field": null}}'
)


class _HeadTooLarge(Exception):
    """Raised from a parser callback, which stops the parser at once."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _reading_head = False
    _head_bytes = 0
    _received_for_head = 0
    _refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_bytes, self._received_for_head = True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            # uvicorn answers a parser error with send_400_response, which answers 431.
            self._refused = True
            raise _HeadTooLarge

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._reading_head or self.transport.is_closing():
            return
        # The head is still incomplete: everything received since it began is head
        # (give or take the end of a pipelined request before it).
        self._received_for_head += len(data)
        if self._received_for_head > MAX_HEAD_BYTES:
            self._refused = True
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)
            return
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
