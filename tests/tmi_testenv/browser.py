"""A headless Chromium driven over the DevTools protocol, for the tests of the HTML report.

The protocol runs over ``--remote-debugging-pipe`` (file descriptors 3 and 4 of the browser, messages of JSON
ended by a NUL byte): no port, no websocket client, nothing but the standard library. The console is read
from the protocol's events, with their levels: ``Runtime.consoleAPICalled`` (console.error and the rest),
``Runtime.exceptionThrown`` (uncaught exceptions) and ``Log.entryAdded`` (the browser's own errors: a blocked
or failed load, a Content-Security-Policy violation). Chromium's ``--enable-logging=stderr`` prints console
messages without their level, and ``--dump-dom`` cannot take a screenshot in the same run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Debian's package; other distributions name the binary otherwise.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Page:
    """One page, loaded from a file, with every console message and error it produced."""

    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session
        self.messages: list[dict] = []  # {source, level, text}

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[dict]:
        """The console errors: console.error/assert, uncaught exceptions, the browser's error entries."""
        return [message for message in self.messages if message["level"] == "error"]

    def screenshot(self, path: Path, width: int) -> Path:
        """A PNG of the whole page, ``width`` CSS pixels wide."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    """A headless Chromium; ``open(path)`` loads a file and waits for its load event."""

    def __init__(self, binary: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="tmi-chromium-")
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()

        def pipes_as_3_and_4():
            # Duplicated first: os.pipe() may itself have returned 3 or 4.
            reads, writes = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        # As root (CI, containers) Chromium refuses to start without --no-sandbox.
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.process = subprocess.Popen(argv, preexec_fn=pipes_as_3_and_4, close_fds=False,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.writer = to_browser_write
        self.reader = from_browser_read
        self.buffer = b""
        self.next_id = 0
        self.pages: dict[str, Page] = {}
        self.loaded: set[str] = set()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.writer, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self.reader, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium closed the DevTools pipe (exit status {self.process.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def _event(self, message: dict) -> None:
        page = self.pages.get(message.get("sessionId", ""))
        if page is None:
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            level = "error" if params.get("type") in ("error", "assert") else params.get("type", "log")
            page.messages.append({"source": "console", "level": level, "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            page.messages.append({"source": "exception", "level": "error", "text": text})
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            page.messages.append({"source": entry.get("source", "browser"), "level": entry.get("level", "info"),
                                  "text": entry.get("text", "")})
        elif method == "Page.loadEventFired":
            self.loaded.add(message["sessionId"])

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def open(self, path: Path) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self.pages[session] = Page(self, session)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            page.call(domain)
        page.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        deadline = time.monotonic() + self.timeout
        while session not in self.loaded:
            self._event(self._read(deadline))
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self.writer)
            os.close(self.reader)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
