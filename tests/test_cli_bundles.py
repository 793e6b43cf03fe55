"""The CLI packs an AppWright project into a bundle, uploads it and a local build once,
and submits jobs that name them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

import qgjob
from tests.support.api import REPO_ROOT, ledger_state, uvicorn_server
from tests.support.blobs import blob_state

FILES = {
    "examples/appwright.config.ts": "export default {};\n",
    "examples/package.json": '{"name": "e", "version": "1.0.0"}\n',
    "examples/package-lock.json": '{"lockfileVersion": 3}\n',
    "examples/tests/a.spec.js": "// a\n",
    "examples/tests/b.spec.js": "// b\n",
    "examples/tests/helpers/util.js": "// util\n",
    "examples/node_modules/appwright/index.js": "// installed\n",
    "examples/.gitignore": "*.log\n/reports/\nscratch\n",
    "examples/debug.log": "noise\n",
    "examples/reports/index.html": "<html>\n",
    "examples/tests/scratch/x.spec.js": "// ignored\n",
    "outside.spec.js": "// not in the project\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "examples/tests/current.spec.js").symlink_to("a.spec.js")
    return tmp_path


def _members(bundle: qgjob.Bundle) -> list[tarfile.TarInfo]:
    bundle.file.seek(0)
    with tarfile.open(fileobj=bundle.file, mode="r:gz") as archive:
        return archive.getmembers()


def test_a_project_packs_without_node_modules_or_ignored_files(repo: Path) -> None:
    with qgjob.pack_project(str(repo / "examples")) as bundle:
        members = _members(bundle)
    assert [member.name for member in members] == [
        ".gitignore",
        "appwright.config.ts",
        "package-lock.json",
        "package.json",
        "tests/a.spec.js",
        "tests/b.spec.js",
        "tests/current.spec.js",
        "tests/helpers/util.js",
    ]
    link = members[6]
    assert (link.issym(), link.linkname) == (True, "a.spec.js")


def test_the_same_files_pack_to_the_same_digest_whenever_and_by_whoever(repo: Path) -> None:
    project = str(repo / "examples")
    with qgjob.pack_project(project) as first:
        pass
    os.utime(repo / "examples/tests/a.spec.js", (1, 1))
    os.chmod(repo / "examples/tests/b.spec.js", 0o600)
    with qgjob.pack_project(project) as second:
        stamps = {(m.mtime, m.uid, m.gid, m.uname) for m in _members(second)}
    (repo / "examples/tests/a.spec.js").write_text("// changed\n")
    with qgjob.pack_project(project) as changed:
        pass
    assert first.sha256 == second.sha256
    assert stamps == {(0, 0, 0, "")}
    assert changed.sha256 != first.sha256


def test_a_symlink_out_of_the_project_is_a_usage_error(repo: Path) -> None:
    (repo / "examples/tests/escape.js").symlink_to("../../outside.spec.js")
    with pytest.raises(qgjob.CliError, match="symlink leading out of the project"):
        qgjob.pack_project(str(repo / "examples"))


def test_specs_are_sent_relative_to_the_bundle_root(repo: Path) -> None:
    with qgjob.pack_project(str(repo / "examples")) as bundle:
        from_root = qgjob.bundle_tests(["examples/tests/a.spec.js"], str(repo), bundle)
        from_tests = qgjob.bundle_tests(["b.spec.js"], str(repo / "examples/tests"), bundle)
    assert (from_root, from_tests) == (["tests/a.spec.js"], ["tests/b.spec.js"])


def test_the_default_project_is_the_nearest_one_upward_of_the_first_spec(repo: Path) -> None:
    assert qgjob.find_project(str(repo / "examples/tests/helpers")) == str(repo / "examples")
    assert qgjob.find_project(str(repo)) is None


@pytest.mark.parametrize(
    ("test", "message"),
    [
        ("outside.spec.js", "is outside the project"),
        ("examples/tests/scratch/x.spec.js", "not in the project"),
        ("examples/tests/missing.spec.js", "not in the project"),
    ],
)
def test_a_spec_outside_the_bundle_exits_2_before_anything_is_sent(
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    test: str,
    message: str,
) -> None:
    monkeypatch.chdir(repo)
    argv = ["--server", "http://127.0.0.1:9", "submit", "--org-id=q", "--app-version-id=v"]
    code = qgjob.run([*argv, "--project=examples", f"--test={test}"])
    assert code == qgjob.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_submit_uploads_the_project_and_build_once_and_jobs_name_them(
    db_url: str, repo: Path, tmp_path: Path
) -> None:
    build = repo / "app-release.apk"
    build.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    env = {"QGJOB_DATABASE_URL": db_url, "QGJOB_AUTH": "local"}
    with uvicorn_server(env, log=tmp_path / "uvicorn.log") as base:
        command = [
            sys.executable,
            str(REPO_ROOT / "qgjob.py"),
            f"--server={base}",
            "submit",
            "--org-id=qualgent",
            "--app-version-id=v1",
            "--test=examples/tests/*.spec.js",
            f"--build={build.name}",
            "--json",
        ]
        first = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
        assert first.returncode == 0, first.stderr
        blobs_after_first = blob_state(db_url)
        again = subprocess.run(
            [*command, "--force"], cwd=repo, capture_output=True, text=True, check=False
        )
        assert again.returncode == 0, again.stderr
        run = httpx.get(f"{base}/runs/{qgjob.json.loads(first.stdout)['run_id']}").json()
        digest = hashlib.sha256(build.read_bytes()).hexdigest()
        downloaded = httpx.get(f"{base}/blobs/{digest}?org=qualgent").content
    assert first.stderr.count("uploaded") == 2, first.stderr
    assert "uploaded" not in again.stderr
    assert [row[:5] for row in blob_state(db_url)] == [row[:5] for row in blobs_after_first]
    assert sorted(job["test_path"] for job in run["jobs"]) == [
        "tests/a.spec.js",
        "tests/b.spec.js",
        "tests/current.spec.js",
    ]
    assert {job["build"] for job in run["jobs"]} == {f"sha256:{digest}"}
    assert {job["platform"] for job in run["jobs"]} == {"android"}, "from the file's suffix"
    assert downloaded == build.read_bytes()
    kinds = {row[2]: row[4] for row in blob_state(db_url)}
    assert kinds == {"bundle": "tests.tar.gz", "build": "app-release.apk"}
    assert ledger_state(db_url)[0] > 0
