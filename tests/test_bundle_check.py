"""What a test bundle may hold, checked as it streams past (ledger/bundles.py)."""

from __future__ import annotations

import gzip
import tarfile

import pytest

from ledger.bundles import BundleChecker
from ledger.errors import UnsafeArchive
from tests.support.blobs import Entry, project_bundle, tar_gz


def _check(data: bytes, piece: int = 1000) -> None:
    checker = BundleChecker()
    for at in range(0, len(data), piece):
        checker.feed(data[at : at + piece])
    checker.finish()


@pytest.mark.parametrize("piece", [1, 7, 512, 100_000])
def test_a_project_archive_passes_whatever_the_pieces_it_arrives_in(piece: int) -> None:
    _check(project_bundle(), piece)


def test_long_names_in_pax_and_gnu_headers_pass_when_they_stay_inside() -> None:
    deep = "tests/" + "d" * 150 + "/x.spec.js"
    for format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        _check(tar_gz([(deep, tarfile.REGTYPE, b"x" * 3000)], format=format))


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([("../evil.js", tarfile.REGTYPE, b"x")], "outside the bundle's root"),
        ([("tests/../../evil.js", tarfile.REGTYPE, b"x")], "outside the bundle's root"),
        ([("/etc/passwd", tarfile.REGTYPE, b"x")], "outside the bundle's root"),
        ([("tests/out", tarfile.SYMTYPE, "../../etc")], "symlink 'tests/out' points outside"),
        ([("abs", tarfile.SYMTYPE, "/etc/passwd")], "symlink 'abs' points outside"),
        ([("hard", tarfile.LNKTYPE, "../x")], "hard link 'hard' points outside"),
        ([("fifo", tarfile.FIFOTYPE, b"")], "neither a file"),
        (
            [("ok.js", tarfile.REGTYPE, b"x"), ("../" + "a" * 150, tarfile.REGTYPE, b"x")],
            "outside the bundle's root",
        ),
    ],
)
def test_entries_that_escape_the_root_are_refused(entries: list[Entry], reason: str) -> None:
    with pytest.raises(UnsafeArchive, match=reason):
        _check(tar_gz(entries))


def test_a_long_gnu_name_escaping_the_root_is_refused() -> None:
    archive = tar_gz([("../" + "a" * 150, tarfile.REGTYPE, b"x")], format=tarfile.GNU_FORMAT)
    with pytest.raises(UnsafeArchive, match="outside the bundle's root"):
        _check(archive)


def test_a_truncated_archive_is_refused() -> None:
    archive = tar_gz([("big.bin", tarfile.REGTYPE, bytes(range(256)) * 400)])
    raw = gzip.decompress(archive)
    with pytest.raises(UnsafeArchive, match="truncated"):
        _check(gzip.compress(raw[: len(raw) // 2]))


def test_something_that_is_not_gzip_is_refused() -> None:
    with pytest.raises(UnsafeArchive, match="not a gzip-compressed tar archive"):
        _check(b"PK\x03\x04 this is a zip file, not a bundle" * 10)
