"""
A headless Chromium driven over the Chrome DevTools Protocol, for the tests
that use a page as a person would: type into it, click its buttons, and
read what it then shows.

Chromium runs with C{--remote-debugging-pipe}: it reads commands from its
file descriptor 3 and writes answers and events to its descriptor 4, each a
JSON text ended by a NUL byte.  That needs no WebSocket and no port.  The
browser runs in a session of its own (C{setsid}), so that a test's end
kills it with every helper process it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

CHROMIUM = shutil.which("chromium")
SETSID = shutil.which("setsid")

#: Seconds a condition in the page may take to hold.
WAIT = 15.0

#: Arguments every headless Chromium of the tests gets.
HEADLESS = [
    "--headless",
    "--no-sandbox",  # root cannot use Chromium's sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class DevToolsError(Exception):
    """
    Chromium answered a command with an error, or a script in the page
    threw.
    """


class _Pipe(ProcessProtocol):
    """
    The protocol's two pipes: commands out on descriptor 3, messages in on
    descriptor 4.
    """

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.buffer = b""
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr = (self.stderr + data)[-4000:]
            return
        if fd != 4:
            return
        self.buffer += data
        *messages, self.buffer = self.buffer.split(b"\0")
        for message in messages:
            self.browser._received(json.loads(message))

    def processEnded(self, reason: Failure) -> None:
        self.browser._gone(reason)
        self.ended.callback(None)


class Browser:
    """
    One headless Chromium with one page.

    @ivar stderr: The end of what Chromium wrote on its standard error.
    """

    def __init__(self, profile: str, *options: str) -> None:
        assert CHROMIUM is not None and SETSID is not None
        self._pipe = _Pipe(self)
        self._next = 0
        self._waiting: dict[int, Deferred[Any]] = {}
        self._session: str | None = None
        self.process = reactor.spawnProcess(
            self._pipe,
            SETSID,
            [
                SETSID,
                CHROMIUM,
                *HEADLESS,
                f"--user-data-dir={profile}",
                *options,
                "--remote-debugging-pipe",
                "about:blank",
            ],
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )
        self._pid = self.process.pid

    @property
    def stderr(self) -> str:
        return self._pipe.stderr.decode("utf-8", "replace")

    def _received(self, message: dict[str, Any]) -> None:
        waiting = self._waiting.pop(message.get("id", -1), None)
        if waiting is None:
            return
        if "error" in message:
            waiting.errback(DevToolsError(message["error"].get("message", message["error"])))
        else:
            waiting.callback(message.get("result", {}))

    def _gone(self, reason: Failure) -> None:
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            answer.errback(DevToolsError(f"chromium ended: {reason.getErrorMessage()}"))

    def send(self, method: str, params: dict[str, Any] | None = None, page: bool = True) -> Any:
        """
        Send a command to the page (or, with C{page=False}, to the
        browser).

        @return: A L{Deferred} firing with the command's result.
        """
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self._session
        answer: Deferred[Any] = Deferred()
        self._waiting[self._next] = answer
        self.process.writeToChild(3, json.dumps(message).encode() + b"\0")
        return answer

    async def open(self, url: str) -> None:
        """
        Open a page at C{url}.
        """
        target = await self.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self._session = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """
        The value of the JavaScript C{expression} in the page (awaited, if
        a promise).

        @raise DevToolsError: If it throws.
        """
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"{expression}: {text}")
        return result["result"].get("value")

    async def waitFor(self, expression: str, seconds: float = WAIT) -> Any:
        """
        Wait until the JavaScript C{expression} is true in the page, and
        give its value.

        @raise DevToolsError: If it is not within C{seconds}.
        """
        return await self.evaluate(
            "new Promise((resolve, reject) => {"
            "  const end = Date.now() + " + str(seconds * 1000) + ";"
            "  (function look() {"
            "    let value;"
            "    try { value = (" + expression + "); } catch (e) { value = undefined; }"
            "    if (value) resolve(value);"
            "    else if (Date.now() > end) reject(new Error('not in time: ' + "
            + json.dumps(expression)
            + "));"
            "    else setTimeout(look, 50);"
            "  })();"
            "})"
        )

    async def click(self, selector: str) -> None:
        """
        Click in the middle of the element C{selector} finds, as a mouse
        does (so it must be there, visible and not covered).
        """
        found = json.dumps(selector)
        x, y = await self.waitFor(
            "(() => { const e = document.querySelector(" + found + "); if (!e) return null;"
            " e.scrollIntoView({block: 'center', inline: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()"
        )
        covered = await self.evaluate(
            f"(() => {{ const e = document.elementFromPoint({x}, {y});"
            f" return !(e && e.closest({found})); }})()"
        )
        if covered:
            raise DevToolsError(f"{selector} is covered at {x}, {y}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def type(self, selector: str, text: str) -> None:
        """
        Click into the field C{selector} finds, and type C{text}.
        """
        await self.click(selector)
        await self.send("Input.insertText", {"text": text})

    async def close(self) -> None:
        """
        Close the browser, killing it and its helpers if it does not go.
        """
        if self._pipe.ended.called:
            return
        self.process.writeToChild(
            3, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0"
        )
        timeout = reactor.callLater(5, self._kill)
        await self._pipe.ended
        if timeout.active():
            timeout.cancel()
        self._kill()

    def _kill(self) -> None:
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
