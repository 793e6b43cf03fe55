"""A device host's cache of the bundles and builds its jobs name, fetched once per digest.

Blobs are read from the blob store (ledger/blobs.py), which for PostgreSQL means straight
from the database the runner already holds a connection to for its claims and events.
Fetching over the HTTP API would need a credential the runner does not have: API tokens
belong to one organisation, and a device host serves them all.

Every fetch streams the content into a temporary file beside its final place, hashing it
on the way, and moves it into place only once the digest matches; a mismatch raises
BlobCorrupt, an InfrastructureError, before anything runs from it. A bundle is unpacked
into its own directory, refusing entries that would land outside it. Dependencies are
installed with ``npm ci`` once per lock file: bundles with the same package.json and
package-lock.json share one ``node_modules``.

Layout under the cache root::

    builds/<sha256>/<name>       a build, under the file name it was uploaded as
    bundles/<sha256>/            a bundle, unpacked
    node_modules/<sha256>/       one npm ci, named by the digest of package.json + lock
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ledger.blobs import Blob, BlobKind, BlobStore, digest_of_reference
from ledger.bundles import unsafe_member
from ledger.errors import BlobCorrupt, BlobNotFound, InfrastructureError

__all__ = ["NPM_CI", "BlobCache"]

#: The install command, run where a bundle's package.json and lock file are.
NPM_CI = ("npm", "ci", "--no-audit", "--no-fund")
_NPM_OUTPUT_TAIL = 4000
_LOCK_FILES = ("package.json", "package-lock.json")


class BlobCache:
    """Bundles and builds fetched from *store* into the directory *root*."""

    def __init__(self, store: BlobStore, root: Path) -> None:
        self._store = store
        self._root = root
        self._installing: dict[str, asyncio.Lock] = {}

    async def build(self, org_id: str, reference: str) -> Path:
        """The local path of the build *reference* (``sha256:<hex>``) names, fetched and
        verified the first time. Raises InfrastructureError when the organisation has no
        such build, BlobCorrupt when what arrives does not match its digest."""
        digest = self._digest(reference, "build")
        blob = await self._owned(org_id, digest, BlobKind.BUILD)
        path = self._root / "builds" / digest / blob.name
        if not path.exists():
            await self._fetch(org_id, digest, path)
        return path

    async def bundle(self, org_id: str, reference: str) -> Path:
        """The directory the bundle *reference* unpacks to, fetched, verified and unpacked
        the first time. Raises InfrastructureError or BlobCorrupt as build() does, and
        BlobCorrupt for an archive with an entry that would land outside its root."""
        digest = self._digest(reference, "bundle")
        # Asked even when cached: a host serves every organisation, and each may use only
        # what it uploaded itself.
        await self._owned(org_id, digest, BlobKind.BUNDLE)
        directory = self._root / "bundles" / digest
        if directory.is_dir():
            return directory
        archive = self._root / "bundles" / f"{digest}.tar.gz"
        try:
            await self._fetch(org_id, digest, archive)
            await asyncio.to_thread(_unpack, archive, directory)
        finally:
            archive.unlink(missing_ok=True)
        return directory

    async def install_dependencies(self, project: Path) -> Path:
        """Run ``npm ci`` for *project*'s package.json and package-lock.json, once per
        pair of them however many bundles share it, and link the result as
        *project*/node_modules; returns the shared directory. Raises InfrastructureError
        when the lock file is missing or npm fails."""
        for name in _LOCK_FILES:
            if not (project / name).is_file():
                raise InfrastructureError(f"the bundle has no {name}, which npm ci needs")
        hasher = hashlib.sha256()
        for name in _LOCK_FILES:
            hasher.update((project / name).read_bytes())
            hasher.update(b"\0")
        key = hasher.hexdigest()
        installed = self._root / "node_modules" / key
        async with self._installing.setdefault(key, asyncio.Lock()):
            if not installed.is_dir():
                await _npm_ci(project, installed)
        link = project / "node_modules"
        if not link.exists():
            link.symlink_to(installed / "node_modules", target_is_directory=True)
        return installed / "node_modules"

    async def _owned(self, org_id: str, digest: str, kind: BlobKind) -> Blob:
        blob = await self._store.has(org_id, digest)
        if blob is None or blob.kind is not kind:
            raise InfrastructureError(
                f"organisation {org_id!r} has no {kind.value} sha256:{digest}"
            )
        return blob

    def _digest(self, reference: str, field: str) -> str:
        digest = digest_of_reference(reference)
        if digest is None:
            raise InfrastructureError(f"the job's {field} {reference!r} names no blob")
        return digest

    async def _fetch(self, org_id: str, digest: str, path: Path) -> None:
        """Stream the blob into *path*, moving it there only once its digest matches."""
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        with _temporary_beside(path) as (partial, temporary):
            try:
                async for chunk in self._store.open(org_id, digest):
                    hasher.update(chunk)
                    partial.write(chunk)
            except BlobNotFound:
                raise InfrastructureError(
                    f"organisation {org_id!r} has no blob sha256:{digest}"
                ) from None
            partial.close()
            if hasher.hexdigest() != digest:
                raise BlobCorrupt(
                    f"the blob fetched as sha256:{digest} has the digest "
                    f"sha256:{hasher.hexdigest()}; nothing was run from it"
                )
            os.replace(temporary, path)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file in *path*'s directory, removed unless it was moved away."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file, temporary
    finally:
        temporary.unlink(missing_ok=True)


def _unpack(archive: Path, directory: Path) -> None:
    """Unpack *archive* into *directory* via a temporary sibling, refusing unsafe entries."""
    unpacking = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".unpacking-"))
    try:
        with tarfile.open(archive, mode="r:gz") as bundle:
            for member in bundle.getmembers():
                reason = unsafe_member(member.name, member.type, member.linkname)
                if reason is not None:
                    raise BlobCorrupt(f"the bundle is unsafe to unpack: {reason}")
            # The stdlib's own rules as well: no absolute paths, no escaping links, no
            # device files, no set-uid bits.
            bundle.extractall(unpacking, filter="data")
        unpacking.rename(directory)
    except (tarfile.TarError, OSError) as error:
        if directory.is_dir():
            return  # another slot unpacked the same bundle first
        raise BlobCorrupt(f"the bundle cannot be unpacked: {error}") from error
    finally:
        shutil.rmtree(unpacking, ignore_errors=True)


async def _npm_ci(project: Path, installed: Path) -> None:
    """Install the dependencies *project*'s lock file names into *installed*/node_modules."""
    installed.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=installed.parent, prefix=".installing-"))
    try:
        for name in (*_LOCK_FILES, ".npmrc"):
            if (project / name).is_file():
                shutil.copyfile(project / name, work / name)
        try:
            process = await asyncio.create_subprocess_exec(
                *NPM_CI,
                cwd=work,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except FileNotFoundError:
            raise InfrastructureError("npm is not installed on this device host") from None
        output, _ = await process.communicate()
        if process.returncode != 0:
            tail = output.decode(errors="replace")[-_NPM_OUTPUT_TAIL:]
            raise InfrastructureError(f"npm ci failed (exit {process.returncode}):\n{tail}")
        # A project without dependencies installs nothing; it still gets its directory.
        (work / "node_modules").mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            # Losing this race to another host process installing the same lock is fine.
            work.rename(installed)
        if not installed.is_dir():
            raise InfrastructureError(f"cannot move the npm install into {installed}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
