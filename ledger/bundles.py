"""What a test bundle may hold, checked as its bytes stream past.

A bundle is a gzip-compressed tar archive of an AppWright project. It may hold regular
files and directories, and links that stay inside it; nothing may land outside its root
(an absolute path, a ``..`` component, a link pointing out) and nothing else (devices,
FIFOs) is allowed. ``BundleChecker`` reads the archive as it is uploaded, one piece at a
time, without keeping it, so a bad bundle is refused before it is stored.
"""

from __future__ import annotations

import posixpath
import tarfile
import zlib

from ledger.errors import UnsafeArchive

__all__ = ["MAX_UNPACKED_BYTES", "BundleChecker", "unsafe_member"]

#: The most a bundle may unpack to, so a small upload cannot stand for an endless archive.
MAX_UNPACKED_BYTES = 4 * 1024**3
_BLOCK = tarfile.BLOCKSIZE
_FILES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
_LINKS = (tarfile.SYMTYPE, tarfile.LNKTYPE)
#: Entries whose data names the next member: pax extended headers and GNU long names.
_NAMING = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
#: Largest naming entry read; real ones are a few hundred bytes.
_MAX_NAMING_BYTES = 64 * 1024


def _escapes(path: str) -> bool:
    normal = posixpath.normpath(path)
    return path.startswith("/") or normal == ".." or normal.startswith("../")


def unsafe_member(name: str, kind: bytes, linkname: str = "") -> str | None:
    """Why an archive entry may not be in a bundle, or None when it may."""
    if _escapes(name):
        return f"{name!r} would land outside the bundle's root"
    if kind in _FILES:
        return None
    if kind == tarfile.SYMTYPE:
        target = posixpath.join(posixpath.dirname(name), linkname)
        if linkname.startswith("/") or _escapes(target):
            return f"the symlink {name!r} points outside the bundle ({linkname!r})"
        return None
    if kind == tarfile.LNKTYPE:
        if _escapes(linkname):
            return f"the hard link {name!r} points outside the bundle ({linkname!r})"
        return None
    return f"{name!r} is neither a file, a directory nor a link"


class BundleChecker:
    """Feed it a bundle's bytes in order, then call finish(); raises UnsafeArchive at the
    first thing a bundle may not hold."""

    def __init__(self) -> None:
        # wbits 31: a gzip stream (header and trailer), not a raw or zlib one.
        self._inflate = zlib.decompressobj(wbits=31)
        self._buffer = bytearray()
        self._unpacked = 0
        #: Data bytes (padding included) of the current member still to pass over.
        self._skip = 0
        #: Set while reading a naming entry's data: (its type, bytes to read).
        self._naming: tuple[bytes, int] | None = None
        self._next_name: str | None = None
        self._next_link: str | None = None
        self._ended = False

    def feed(self, data: bytes) -> None:
        if self._ended or self._inflate.eof:
            return
        try:
            unpacked = self._inflate.decompress(data, _BLOCK * 256)
            while unpacked:
                self._take(unpacked)
                if self._ended or self._inflate.eof:
                    return
                unpacked = self._inflate.decompress(self._inflate.unconsumed_tail, _BLOCK * 256)
        except zlib.error as error:
            raise UnsafeArchive(
                f"the bundle is not a gzip-compressed tar archive ({error})"
            ) from None

    def finish(self) -> None:
        if not self._ended:
            raise UnsafeArchive("the bundle archive is truncated: it has no end-of-archive marker")

    def _take(self, unpacked: bytes) -> None:
        self._unpacked += len(unpacked)
        if self._unpacked > MAX_UNPACKED_BYTES:
            raise UnsafeArchive(f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        view = memoryview(unpacked)
        if self._skip:
            passed = min(self._skip, len(view))
            self._skip -= passed
            view = view[passed:]
        self._buffer += view
        while not self._ended:
            if self._skip:
                passed = min(self._skip, len(self._buffer))
                self._skip -= passed
                del self._buffer[:passed]
                if self._skip:
                    return
            if self._naming is not None:
                kind, size = self._naming
                padded = -(-size // _BLOCK) * _BLOCK
                if len(self._buffer) < padded:
                    return
                self._read_naming(kind, bytes(self._buffer[:size]))
                del self._buffer[:padded]
                self._naming = None
                continue
            if len(self._buffer) < _BLOCK:
                return
            header = bytes(self._buffer[:_BLOCK])
            del self._buffer[:_BLOCK]
            self._read_header(header)

    def _read_header(self, block: bytes) -> None:
        if block == bytes(_BLOCK):
            # The first of the two zero blocks that end an archive.
            self._ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as error:
            raise UnsafeArchive(f"the bundle has a damaged tar header ({error})") from None
        if info.type in _NAMING:
            if info.size > _MAX_NAMING_BYTES:
                raise UnsafeArchive("the bundle has an oversized extended header")
            self._naming = (info.type, info.size)
            return
        if info.type == tarfile.XGLTYPE:
            self._skip = -(-info.size // _BLOCK) * _BLOCK
            return
        name = self._next_name if self._next_name is not None else info.name
        linkname = self._next_link if self._next_link is not None else info.linkname
        self._next_name = self._next_link = None
        reason = unsafe_member(name, info.type, linkname)
        if reason is not None:
            raise UnsafeArchive(f"the bundle is refused: {reason}")
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            self._skip = -(-info.size // _BLOCK) * _BLOCK

    def _read_naming(self, kind: bytes, data: bytes) -> None:
        if kind == tarfile.GNUTYPE_LONGNAME:
            self._next_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind == tarfile.GNUTYPE_LONGLINK:
            self._next_link = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        else:
            for key, value in _pax_records(data):
                if key == "path":
                    self._next_name = value
                elif key == "linkpath":
                    self._next_link = value


def _pax_records(data: bytes) -> list[tuple[str, str]]:
    """The ``key=value`` records of a pax extended header (``"<length> key=value\\n"``)."""
    records = []
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        length_text = data[at:space]
        if space < 0 or not length_text.isdigit() or int(length_text) <= space - at:
            raise UnsafeArchive("the bundle has a malformed pax header")
        record = data[space + 1 : at + int(length_text)]
        key, equals, value = record.rstrip(b"\n").partition(b"=")
        if not equals:
            raise UnsafeArchive("the bundle has a malformed pax header")
        records.append(
            (key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )
        at += int(length_text)
    return records
