"""A device host fetches bundles and builds by digest into its cache, verifies them,
unpacks bundles safely and installs a lock file's dependencies once."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ledger.blobs import BlobKind, PostgresBlobStore, reference
from ledger.errors import BlobCorrupt, InfrastructureError
from runner.blob_cache import BlobCache
from tests.support.blobs import project_bundle, sha256, tar_gz

pytestmark = pytest.mark.anyio

BUILD = b"\x7fAPK" * 700_000


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[PostgresBlobStore]:
    pool = AsyncConnectionPool(
        db_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    try:
        yield PostgresBlobStore(pool)
    finally:
        await pool.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _put(
    store: PostgresBlobStore, data: bytes, kind: BlobKind, name: str, org: str = "qualgent"
) -> str:
    await store.put(org, sha256(data), _once(data), kind=kind, name=name, max_size=1 << 30)
    return reference(sha256(data))


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


async def test_a_build_is_fetched_once_under_its_uploaded_name(
    store: PostgresBlobStore, db_url: str, tmp_path: Path
) -> None:
    build = await _put(store, BUILD, BlobKind.BUILD, "app-release.apk")
    cache = BlobCache(store, tmp_path)
    path = await cache.build("qualgent", build)
    assert path.name == "app-release.apk"
    assert path.read_bytes() == BUILD
    with psycopg.connect(db_url) as conn:
        conn.execute("update blob_chunks set data = 'spoiled'")
    assert await cache.build("qualgent", build) == path, "a second job fetches nothing"


async def test_another_organisations_build_is_not_fetched(
    store: PostgresBlobStore, tmp_path: Path
) -> None:
    build = await _put(store, BUILD, BlobKind.BUILD, "app.apk", org="rival")
    with pytest.raises(InfrastructureError, match="has no build"):
        await BlobCache(store, tmp_path).build("qualgent", build)
    assert _files(tmp_path) == []


async def test_content_that_does_not_match_its_digest_fails_before_anything_runs(
    store: PostgresBlobStore, db_url: str, tmp_path: Path
) -> None:
    build = await _put(store, BUILD, BlobKind.BUILD, "app.apk")
    with psycopg.connect(db_url) as conn:
        conn.execute("update blob_chunks set data = overlay(data placing 'X' from 10)")
    with pytest.raises(BlobCorrupt, match=f"fetched as {build} has the digest"):
        await BlobCache(store, tmp_path).build("qualgent", build)
    assert list((tmp_path / "builds").rglob("*.apk")) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no partial file left"


async def test_a_bundle_unpacks_into_its_own_directory(
    store: PostgresBlobStore, tmp_path: Path
) -> None:
    bundle = await _put(store, project_bundle(), BlobKind.BUNDLE, "tests.tar.gz")
    directory = await BlobCache(store, tmp_path).bundle("qualgent", bundle)
    assert _files(directory) == [
        "appwright.config.ts",
        "package.json",
        "tests",
        "tests/a.spec.js",
        "tests/latest.spec.js",
    ]
    assert (directory / "tests/latest.spec.js").read_text() == "// a\n"
    assert not (tmp_path / "bundles" / f"{sha256(project_bundle())}.tar.gz").exists()


@pytest.mark.parametrize(
    "archive",
    [
        tar_gz([("../escape.js", tarfile.REGTYPE, b"x")]),
        tar_gz([("/tmp/abs.js", tarfile.REGTYPE, b"x")]),
        tar_gz([("out", tarfile.SYMTYPE, "../../../../etc")]),
        tar_gz([("hard", tarfile.LNKTYPE, "../../etc/passwd")]),
    ],
    ids=["dot-dot", "absolute", "symlink-out", "hardlink-out"],
)
async def test_a_bundle_escaping_its_root_is_refused_and_nothing_unpacked(
    store: PostgresBlobStore, tmp_path: Path, archive: bytes
) -> None:
    # Stored behind the API's back, as a store another way round might hold it.
    bundle = await _put(store, archive, BlobKind.BUNDLE, "evil.tar.gz")
    with pytest.raises(BlobCorrupt, match="unsafe to unpack"):
        await BlobCache(store, tmp_path / "cache").bundle("qualgent", bundle)
    assert _files(tmp_path / "cache" / "bundles") == []
    assert not Path("/tmp/abs.js").exists()


def _project(root: Path, *, spec: str, version: str = "1.0.0") -> Path:
    root.mkdir(parents=True)
    package = {"name": "p", "version": version}
    lock = {
        "name": "p",
        "version": version,
        "lockfileVersion": 3,
        "requires": True,
        "packages": {"": {"name": "p", "version": version}},
    }
    (root / "package.json").write_text(json.dumps(package))
    (root / "package-lock.json").write_text(json.dumps(lock))
    (root / spec).write_text("// spec\n")
    return root


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
async def test_npm_ci_runs_once_per_lock_file(store: PostgresBlobStore, tmp_path: Path) -> None:
    cache = BlobCache(store, tmp_path / "cache")
    first = await cache.install_dependencies(_project(tmp_path / "one", spec="a.spec.js"))
    (first / "installed-once").touch()
    same_lock = await cache.install_dependencies(_project(tmp_path / "two", spec="b.spec.js"))
    other_lock = await cache.install_dependencies(
        _project(tmp_path / "three", spec="a.spec.js", version="2.0.0")
    )
    assert same_lock == first
    assert (tmp_path / "two" / "node_modules" / "installed-once").exists()
    assert other_lock != first
    assert not (other_lock / "installed-once").exists()


async def test_a_bundle_without_a_lock_file_cannot_be_installed(
    store: PostgresBlobStore, tmp_path: Path
) -> None:
    project = _project(tmp_path / "p", spec="a.spec.js")
    (project / "package-lock.json").unlink()
    with pytest.raises(InfrastructureError, match=r"no package-lock\.json"):
        await BlobCache(store, tmp_path / "cache").install_dependencies(project)


async def test_another_organisations_bundle_is_not_served_from_the_cache(
    store: PostgresBlobStore, tmp_path: Path
) -> None:
    bundle = await _put(store, project_bundle(), BlobKind.BUNDLE, "tests.tar.gz", org="rival")
    cache = BlobCache(store, tmp_path)
    assert (await cache.bundle("rival", bundle)).is_dir()
    with pytest.raises(InfrastructureError, match="'qualgent' has no bundle"):
        await cache.bundle("qualgent", bundle)
