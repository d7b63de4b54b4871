"""Debian's headless Chromium, driven over the DevTools protocol: navigate, read the page, click, type, screenshot.

No browser is downloaded: the ``chromium`` package is the browser, and the
protocol runs over a websocket (the ``websockets`` package). Every network
request the page makes is recorded, so a test can prove it stayed on the device.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, ws, session: str, ids) -> None:
        self._ws, self._session, self._ids = ws, session, ids
        self.events: list[dict] = []
        self.requests: list[str] = []

    def send(self, method: str, timeout: float = 30.0, **params) -> dict:
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params, "sessionId": self._session}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"]["url"])
        self.events.append(message)

    def open(self, url: str, timeout: float = 20.0) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout)

    def wait_event(self, method: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            self._event(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0):
        """Poll ``expression`` in the page until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"page never made {expression!r} true")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element (pressed and released)."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def press(self, key: str) -> None:
        """A key typed on the keyboard (one printable character)."""
        self.send("Input.dispatchKeyEvent", type="keyDown", key=key, text=key)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


@contextmanager
def chromium(width: int = 1200, height: int = 760):
    """A fresh headless Chromium with its own profile; yields a :class:`Page`."""
    from websockets.sync.client import connect

    exe = chromium_path()
    profile = tempfile.mkdtemp(prefix="edgeclass-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--remote-allow-origins=*", f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = None
        deadline = time.monotonic() + 30
        while endpoint is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode} before it listened")
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = match.group(1) if match else None
        if endpoint is None:
            raise RuntimeError("chromium did not print its DevTools address")
        with connect(endpoint, max_size=64 * 1024 * 1024, open_timeout=20) as ws:
            ids = itertools.count(1)
            target = _browser_call(ws, ids, "Target.createTarget", url="about:blank")["targetId"]
            session = _browser_call(ws, ids, "Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            page = Page(ws, session, ids)
            page.send("Page.enable")
            page.send("Network.enable")
            page.send("Runtime.enable")
            page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _browser_call(ws, ids, method: str, **params) -> dict:
    ident = next(ids)
    ws.send(json.dumps({"id": ident, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=20))
        if message.get("id") == ident:
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return message["result"]
