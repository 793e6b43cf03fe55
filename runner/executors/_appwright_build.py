"""Which build an AppWright run uses: a local path, a URL (downloaded when needed) or a bs:// id."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import attrs

from ledger.errors import InfrastructureError

from .base import SlotSpec

__all__ = ["check_template", "resolve_build"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Seconds without progress after which a build download is abandoned.
_DOWNLOAD_TIMEOUT_S = 60.0


def check_template(
    _instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is None:
        return
    try:
        value.format(app_version_id="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{attribute.name} may only use the {{app_version_id}} placeholder: {value!r}"
        ) from exc


async def resolve_build(
    slot: SlotSpec,
    app_version_id: str,
    build: str | None,
    *,
    project_dir: Path,
    work_dir: Path,
    build_template: str | None,
) -> str:
    """The ``buildPath`` for the config; see ``AppWrightExecutor.install``."""
    ref = build or _from_template(build_template, app_version_id)
    match = _SCHEME.match(ref)
    scheme = match.group(1).lower() if match else None
    if scheme == "bs":
        if slot.target != "browserstack":
            raise InfrastructureError(
                f"build {ref!r} is a BrowserStack app id, but slot {slot.name!r} "
                f"is a {slot.target} slot"
            )
        return ref
    if scheme in ("http", "https"):
        if slot.target == "browserstack":
            return ref
        return str(await _download(work_dir, app_version_id, ref))
    if scheme is not None:
        raise InfrastructureError(
            f"build {ref!r}: unsupported scheme {scheme}:// (use a path, http(s) or bs://)"
        )
    path = (project_dir / Path(ref).expanduser()).absolute()
    if not path.exists():
        raise InfrastructureError(f"build not found: {path}")
    return str(path)


async def _download(work_dir: Path, app_version_id: str, url: str) -> Path:
    """Fetch a build once per (app version, URL): local devices need a local file."""
    key = hashlib.sha256(f"{app_version_id}\n{url}".encode()).hexdigest()[:16]
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    path = work_dir / "builds" / key / (name if name not in ("", "..") else "build")
    if not path.is_file():
        try:
            await asyncio.to_thread(_fetch, url, path)
        except (OSError, ValueError) as exc:
            raise InfrastructureError(f"cannot download build {url}: {exc}") from exc
    return path


def _from_template(build_template: str | None, app_version_id: str) -> str:
    if build_template is None:
        raise InfrastructureError(
            f"no build for app version {app_version_id!r}: the job names none "
            "and this runner has no build template"
        )
    return build_template.format(app_version_id=app_version_id)


def _fetch(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private partial file, renamed into place: concurrent fetches of one build are safe.
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
        try:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                shutil.copyfileobj(response, partial)
        except BaseException:
            os.unlink(partial.name)
            raise
    os.replace(partial.name, path)
