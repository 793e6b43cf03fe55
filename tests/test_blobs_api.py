"""Blobs over HTTP: upload by digest, dedupe, download, org scoping, bad input, and jobs
that name them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from http_api import create_app
from http_api.auth import create_token
from ledger.blobs import CHUNK_BYTES, BlobKind, PostgresBlobStore, collect_garbage
from ledger.store import read_stream
from projections import Projector
from tests.support.api import api_client, job_body, ledger_state
from tests.support.blobs import blob_state, chunk_rows, project_bundle, sha256, tar_gz
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.anyio

BUILD = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 1000)  # two chunks and a bit


def _put(digest: str, kind: str = "build", name: str = "app.apk", org: str = "qualgent") -> str:
    return f"/blobs/{digest}?kind={kind}&name={name}&org={org}"


async def _pieces(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def test_a_build_uploads_once_and_downloads_as_it_was(db_url: str) -> None:
    digest = sha256(BUILD)
    async with api_client(db_url) as client:
        first = await client.put(_put(digest), content=_pieces(BUILD))
        again = await client.put(_put(digest), content=BUILD)
        head = await client.head(f"/blobs/{digest}?org=qualgent")
        got = await client.get(f"/blobs/{digest}?org=qualgent")
    assert first.status_code == 201, first.text
    assert first.json()["reference"] == f"sha256:{digest}"
    assert (first.json()["size"], first.json()["name"]) == (len(BUILD), "app.apk")
    assert again.status_code == 200
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(BUILD)
    assert head.headers["x-blob-name"] == "app.apk"
    assert got.content == BUILD
    assert chunk_rows(db_url) == 3


async def test_a_file_name_in_any_script_is_kept(db_url: str) -> None:
    digest = sha256(BUILD)
    async with api_client(db_url) as client:
        stored = await client.put(_put(digest, name="Café%20ü.apk"), content=BUILD)
        head = await client.head(f"/blobs/{digest}?org=qualgent")
    assert stored.json()["name"] == "Café ü.apk"
    assert head.headers["x-blob-name"] == "Caf%C3%A9%20%C3%BC.apk"


async def test_an_empty_blob_is_stored_and_served(db_url: str) -> None:
    digest = sha256(b"")
    async with api_client(db_url) as client:
        assert (await client.put(_put(digest), content=b"")).status_code == 201
        assert (await client.get(f"/blobs/{digest}?org=qualgent")).content == b""


async def test_another_organisations_digest_is_not_found(db_url: str) -> None:
    digest = sha256(BUILD)
    mine = {"Authorization": f"Bearer {create_token(db_url, 'qualgent')}"}
    theirs = {"Authorization": f"Bearer {create_token(db_url, 'rival')}"}
    async with api_client(db_url, local_mode=False) as client:
        stored = await client.put(f"/blobs/{digest}?kind=build", content=BUILD, headers=mine)
        assert stored.status_code == 201, stored.text
        before = blob_state(db_url), ledger_state(db_url)
        head = await client.head(f"/blobs/{digest}", headers=theirs)
        get = await client.get(f"/blobs/{digest}", headers=theirs)
        asking_for_mine = await client.get(f"/blobs/{digest}?org=qualgent", headers=theirs)
        submit = await client.post(
            "/jobs", json=job_body(org_id="rival", build=f"sha256:{digest}"), headers=theirs
        )
        assert (blob_state(db_url), ledger_state(db_url)) == before
        assert (await client.head(f"/blobs/{digest}", headers=mine)).status_code == 200
    assert head.status_code == 404
    assert get.status_code == 404
    assert get.json()["error"]["field"] == "sha256"
    assert asking_for_mine.status_code == 403
    assert submit.status_code == 422
    assert submit.json()["error"]["field"] == "build"


async def test_the_same_content_in_two_organisations_is_two_blobs(db_url: str) -> None:
    digest = sha256(BUILD)
    async with api_client(db_url) as client:
        for org in ("qualgent", "rival"):
            assert (await client.put(_put(digest, org=org), content=BUILD)).status_code == 201
    assert [row[0] for row in blob_state(db_url)] == ["qualgent", "rival"]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_blob_over_its_kinds_limit_is_refused_and_nothing_kept(
    db_url: str, monkeypatch: pytest.MonkeyPatch, declared: bool
) -> None:
    monkeypatch.setenv("QGJOB_MAX_BUILD_BYTES", str(CHUNK_BYTES + 10))
    digest = sha256(BUILD)
    before = ledger_state(db_url)
    async with api_client(db_url) as client:
        body = BUILD if declared else _pieces(BUILD)
        response = await client.put(_put(digest), content=body)
    assert response.status_code == 413, response.text
    assert ledger_state(db_url) == before
    assert response.json()["error"] == {
        "code": "blob_too_large",
        "message": f"a build may be at most {CHUNK_BYTES + 10} bytes",
        "field": "body",
    }
    assert blob_state(db_url) == []
    assert chunk_rows(db_url) == 0


async def test_content_that_does_not_match_its_digest_is_refused_and_nothing_kept(
    db_url: str,
) -> None:
    before = ledger_state(db_url)
    async with api_client(db_url) as client:
        response = await client.put(_put(sha256(b"something else")), content=_pieces(BUILD))
    assert response.status_code == 422
    assert ledger_state(db_url) == before
    assert response.json()["error"]["code"] == "digest_mismatch"
    assert response.json()["error"]["field"] == "sha256"
    assert sha256(BUILD) in response.json()["error"]["message"]
    assert blob_state(db_url) == []
    assert chunk_rows(db_url) == 0


async def test_two_uploads_of_the_same_content_at_once_store_it_once(db_url: str) -> None:
    digest = sha256(BUILD)
    async with api_client(db_url) as client:
        responses = await asyncio.gather(
            client.put(_put(digest), content=_pieces(BUILD)),
            client.put(_put(digest), content=_pieces(BUILD)),
        )
    assert sorted(response.status_code for response in responses) == [200, 201]
    assert len(blob_state(db_url)) == 1
    assert chunk_rows(db_url) == 3


async def test_an_upload_broken_off_midway_keeps_nothing(db_url: str) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield BUILD[: CHUNK_BYTES * 2]
        raise ConnectionResetError("the client went away")

    async with AsyncConnectionPool(db_url, kwargs={"autocommit": True}, open=False) as pool:
        store = PostgresBlobStore(pool)
        with pytest.raises(ConnectionResetError):
            await store.put(
                "qualgent", sha256(BUILD), broken(), kind=BlobKind.BUILD, name="a", max_size=1 << 30
            )
    assert blob_state(db_url) == []
    assert chunk_rows(db_url) == 0


@pytest.mark.parametrize(
    ("path", "field", "code"),
    [
        ("/blobs/ABC?kind=build&org=qualgent", "sha256", "invalid_digest"),
        (f"/blobs/{'A' * 64}?kind=build&org=qualgent", "sha256", "invalid_digest"),
        (f"/blobs/{'a' * 64}?org=qualgent", "kind", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=artifact&org=qualgent", "kind", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=build&name=..&org=qualgent", "name", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=build&name=a/b&org=qualgent", "name", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=build&name=a%5Cb&org=qualgent", "name", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=build&name=a%0Ab&org=qualgent", "name", "invalid_query"),
        (f"/blobs/{'a' * 64}?kind=build", "org", "invalid_query"),
    ],
)
async def test_bad_upload_parameters_are_named(
    db_url: str, path: str, field: str, code: str
) -> None:
    async with api_client(db_url) as client:
        response = await client.put(path, content=b"x")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["code"] == code
    assert blob_state(db_url) == []


@pytest.mark.parametrize(
    "archive",
    [
        tar_gz([("ok.js", b"0", b"x"), ("../escape.js", b"0", b"x")]),
        tar_gz([("/etc/cron.d/evil", b"0", b"x")]),
        tar_gz([("tests/out", b"2", "../../../etc/passwd")]),
        b"not a gzip file at all",
    ],
    ids=["dot-dot", "absolute", "symlink-out", "not-gzip"],
)
async def test_an_unsafe_bundle_is_refused_and_nothing_kept(db_url: str, archive: bytes) -> None:
    before = ledger_state(db_url)
    async with api_client(db_url) as client:
        response = await client.put(
            _put(sha256(archive), kind="bundle", name="tests.tar.gz"), content=_pieces(archive, 7)
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "unsafe_archive"
    assert response.json()["error"]["field"] == "body"
    assert blob_state(db_url) == []
    assert ledger_state(db_url) == before


async def test_a_job_runs_from_an_uploaded_bundle_and_build(db_url: str) -> None:
    bundle = project_bundle()
    async with api_client(db_url) as client:
        put_bundle = await client.put(_put(sha256(bundle), "bundle", "t.tar.gz"), content=bundle)
        assert put_bundle.status_code == 201, put_bundle.text
        assert (await client.put(_put(sha256(BUILD)), content=BUILD)).status_code == 201
        response = await client.post(
            "/jobs",
            json=job_body(bundle=f"sha256:{sha256(bundle)}", build=f"sha256:{sha256(BUILD)}"),
        )
    assert response.status_code == 201, response.text
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        submitted = (await read_stream(conn, response.json()["job_id"]))[0].event
    assert submitted.bundle == f"sha256:{sha256(bundle)}"  # type: ignore[union-attr]
    assert submitted.build == f"sha256:{sha256(BUILD)}"  # type: ignore[union-attr]
    assert all(row[5] is not None for row in blob_state(db_url)), "both marked referenced"


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"bundle": f"sha256:{'0' * 64}"}, 422, "bundle"),
        ({"bundle": "tests.tar.gz"}, 400, "bundle"),
        ({"bundle": f"sha256:{'A' * 64}"}, 400, "bundle"),
        ({"build": f"sha256:{'0' * 64}"}, 422, "build"),
        ({"build": "sha256:abc"}, 400, "build"),
        ({"tests": ["a.spec.js", "b.spec.js"], "bundle": f"sha256:{'0' * 64}"}, 422, "bundle"),
    ],
)
async def test_a_job_naming_an_unknown_or_malformed_blob_is_refused(
    db_url: str, fields: dict[str, object], status: int, field: str
) -> None:
    bundle = project_bundle()
    async with api_client(db_url) as client:
        await client.put(_put(sha256(bundle), "bundle"), content=bundle)
        before = blob_state(db_url), ledger_state(db_url)
        body = job_body(**fields)
        if "tests" in fields:
            del body["test_path"]
        response = await client.post("/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert (blob_state(db_url), ledger_state(db_url)) == before


async def test_a_build_named_as_a_bundle_is_refused(db_url: str) -> None:
    async with api_client(db_url) as client:
        await client.put(_put(sha256(BUILD)), content=BUILD)
        response = await client.post("/jobs", json=job_body(bundle=f"sha256:{sha256(BUILD)}"))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "bundle"


async def test_garbage_collection_keeps_what_unfinished_jobs_name(db_url: str) -> None:
    bundle = project_bundle()
    async with api_client(db_url) as client:
        await client.put(_put(sha256(bundle), "bundle"), content=bundle)
        await client.put(_put(sha256(BUILD)), content=BUILD)
        submitted = await client.post("/jobs", json=job_body(bundle=f"sha256:{sha256(bundle)}"))
        assert submitted.status_code == 201, submitted.text
    await Projector(db_url).catch_up()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        kept = await collect_garbage(conn, dt.timedelta(days=1))
        collected = await collect_garbage(conn, dt.timedelta(0))
    assert kept == []
    assert collected == [("qualgent", sha256(BUILD))]
    assert [row[2] for row in blob_state(db_url)] == ["bundle"]
    assert chunk_rows(db_url) == 1


async def test_the_api_collects_blobs_past_their_retention_as_it_starts(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(db_url) as client:
        await client.put(_put(sha256(BUILD)), content=BUILD)
    assert len(blob_state(db_url)) == 1, "kept while within the default retention"
    monkeypatch.setenv("QGJOB_BLOB_RETENTION_DAYS", "0")
    async with api_client(db_url):
        await async_wait_until(
            lambda: _no_blobs(db_url), what="the collector to remove the unreferenced blob"
        )
    assert chunk_rows(db_url) == 0


async def _no_blobs(url: str) -> bool:
    return blob_state(url) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QGJOB_MAX_BUILD_BYTES", "0"),
        ("QGJOB_MAX_BUNDLE_BYTES", "1e6"),
        ("QGJOB_BLOB_RETENTION_DAYS", "-1"),
        ("QGJOB_BLOB_RETENTION_DAYS", "a week"),
    ],
)
def test_a_bad_blob_setting_stops_the_api_and_names_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        create_app(db_url, local_mode=True)
