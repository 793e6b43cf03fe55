"""A 1 GiB build up through the API and down to a device host, with each process's memory.

On a fresh database (the embedded cluster, or QGJOB_DATABASE_URL), the API runs as
``uvicorn http_api.app:app`` in a subprocess. Three more processes move a SIZE_MIB file
of random bytes, one after the other:

- upload: ``qgjob submit --build FILE`` (the CLI as a CI step runs it), which hashes the
  file, uploads it with PUT /blobs and submits a job naming it;
- download: GET /blobs/{sha256} over HTTP, read in 1 MiB pieces and hashed;
- fetch: a device host's BlobCache (runner/blob_cache.py) fetching the build into a cache
  directory from the database and verifying it.

Memory is each process's peak resident set: the API's VmHWM from /proc/PID/status (its
whole life, both transfers), the others' ru_maxrss as they exit. The target is under
200 MiB each: nothing holds the build whole.

Last line: ``RESULT size_mib=… upload_s=… download_s=… fetch_s=… api_mib=… cli_mib=…
download_mib=… fetch_mib=…``.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._database import bench_database
from bench._processes import ROOT, api_server

SIZE_MIB = 1024
_BLOCK = 1024 * 1024
ORG = "bench"


def _write_build(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(SIZE_MIB):
            block = os.urandom(_BLOCK)
            hasher.update(block)
            file.write(block)
    return hasher.hexdigest()


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far, from /proc (VmHWM, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _run_measured(command: list[str], **env: str) -> tuple[float, float]:
    """Run *command* to its end; returns its seconds and its peak resident set in MiB."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited with {process.returncode}")
    return time.monotonic() - started, usage.ru_maxrss / 1024


def _download(port: int, digest: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", f"/blobs/{digest}?org={ORG}")
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"GET /blobs answered {response.status}")
    hasher = hashlib.sha256()
    while block := response.read(_BLOCK):
        hasher.update(block)
    if hasher.hexdigest() != digest:
        raise RuntimeError("the download does not match the upload")


async def _fetch(url: str, digest: str, cache: Path) -> None:
    from psycopg_pool import AsyncConnectionPool

    from ledger.blobs import PostgresBlobStore, reference
    from runner.blob_cache import BlobCache

    async with AsyncConnectionPool(
        url, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:
        path = await BlobCache(PostgresBlobStore(pool), cache).build(ORG, reference(digest))
    if path.stat().st_size != SIZE_MIB * _BLOCK:
        raise RuntimeError(f"the fetched build {path} has the wrong size")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="qgjob-bench-") as scratch, bench_database() as url:
        build = Path(scratch) / "app-release.apk"
        digest = _write_build(build)
        with api_server(url) as (port, api):
            upload_s, cli_mib = _run_measured(
                [
                    sys.executable,
                    str(ROOT / "qgjob.py"),
                    f"--server=http://127.0.0.1:{port}",
                    "submit",
                    f"--org-id={ORG}",
                    "--app-version-id=bench-1",
                    "--test=tests/none.spec.js",
                    f"--build={build}",
                ]
            )
            download_s, download_mib = _run_measured(
                [sys.executable, __file__, "download", str(port), digest]
            )
            api_mib = _peak_rss_mib(api.pid)
        fetch_s, fetch_mib = _run_measured(
            [sys.executable, __file__, "fetch", url, digest, str(Path(scratch) / "cache")]
        )
    rate = SIZE_MIB / upload_s, SIZE_MIB / download_s, SIZE_MIB / fetch_s
    print(f"{SIZE_MIB} MiB build")
    print(f"upload   (qgjob submit --build): {upload_s:6.1f} s, {rate[0]:5.0f} MiB/s")
    print(f"download (GET /blobs):           {download_s:6.1f} s, {rate[1]:5.0f} MiB/s")
    print(f"fetch    (device host cache):    {fetch_s:6.1f} s, {rate[2]:5.0f} MiB/s")
    print(
        f"peak resident memory: API {api_mib:.0f} MiB, CLI {cli_mib:.0f} MiB, "
        f"download client {download_mib:.0f} MiB, fetch {fetch_mib:.0f} MiB (target < 200 each)"
    )
    print(
        f"RESULT size_mib={SIZE_MIB} upload_s={upload_s:.1f} download_s={download_s:.1f} "
        f"fetch_s={fetch_s:.1f} api_mib={api_mib:.0f} cli_mib={cli_mib:.0f} "
        f"download_mib={download_mib:.0f} fetch_mib={fetch_mib:.0f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["download"]:
        _download(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["fetch"]:
        asyncio.run(_fetch(sys.argv[2], sys.argv[3], Path(sys.argv[4])))
    else:
        main()
