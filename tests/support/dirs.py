"""Directories for an embedded server's data, where the server can reach them."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["server_dir"]


@contextlib.contextmanager
def server_dir(prefix: str = "qgjob-test-") -> Iterator[Path]:
    """A new directory, removed afterwards, that the embedded server's own user can enter.

    Not below pytest's tmp_path: pytest makes its base directory 0700 at every session
    start, which locks out the server's user (the server does not run as root), also
    while another session runs.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
