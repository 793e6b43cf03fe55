"""Debian's headless Chromium, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and answer on fd 4,
each message JSON ended by a NUL, so a test drives a real page in real time with the
standard library: open it, wait for a condition in it with a deadline, read its DOM,
take screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Page", "open_page"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_WIDTH, _HEIGHT = 1400, 1000


class Page:
    """One browser tab attached over the pipe."""

    def __init__(self, commands: int, answers: int) -> None:
        self._commands = commands
        self._answers = answers
        self._buffer = b""
        self._ids = itertools.count(1)
        self._session: str | None = None

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; raises if Chromium answers an error."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._next(deadline)
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def attach(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=_WIDTH,
            height=_HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.goto(url)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def prefer_dark(self, dark: bool) -> None:
        """Show the page as a system in dark mode (or light) would."""
        scheme = {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}
        self.send("Emulation.setEmulatedMedia", features=[scheme])

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, what: str = "") -> Any:
        """Wait until *expression* is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.1)

    def dom(self) -> str:
        html: str = self.evaluate("document.documentElement.outerHTML")
        return html

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page at a laptop's window width."""
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": _WIDTH, "height": max(height, _HEIGHT), "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.contextmanager
def open_page(url: str, profile: Path) -> Iterator[Page]:
    """A headless Chromium showing *url*, closed on the way out."""
    assert CHROMIUM is not None
    to_chromium, commands = os.pipe()
    answers, from_chromium = os.pipe()

    def onto_debugging_fds() -> None:
        # Copied above every open fd first: a pipe already on fd 3 or 4 would otherwise
        # keep its close-on-exec flag through a dup2 onto itself.
        reading, writing = os.dup(to_chromium), os.dup(from_chromium)
        os.dup2(reading, 3)
        os.dup2(writing, 4)

    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,
        preexec_fn=onto_debugging_fds,
    )
    os.close(to_chromium)
    os.close(from_chromium)
    try:
        page = Page(commands, answers)
        page.attach(url)
        yield page
    finally:
        os.close(commands)
        os.close(answers)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
