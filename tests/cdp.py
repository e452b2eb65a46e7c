"""A tiny Chrome DevTools Protocol client over aiohttp's websocket: enough to drive a headless
Chromium in a test (open a page, evaluate JavaScript, type keys, take a screenshot) without a
browser-automation dependency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

REPLY_TIMEOUT = 30.0


class CdpError(Exception):
    """The browser answered a command with an error, or went away before answering."""


class Cdp:
    """One DevTools websocket: ``send`` a command, get its reply (matched by id); events are
    dropped unless ``record`` asked for them, since the tests poll rather than wait on them."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._recorded: dict[str, list[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    def record(self, method: str) -> list[dict[str, Any]]:
        """A list that every ``method`` event's params are appended to from now on (from every
        attached page: the params say which request or frame each is about)."""
        return self._recorded.setdefault(method, [])

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Run ``method`` (in the page attached as ``session``, if given): its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        reply = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = reply
        await self._socket.send_str(json.dumps(message))
        try:
            return await asyncio.wait_for(reply, REPLY_TIMEOUT)
        finally:
            self._pending.pop(message["id"], None)

    async def _read(self) -> None:
        try:
            async for frame in self._socket:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                if message.get("method") in self._recorded:
                    self._recorded[message["method"]].append(message.get("params", {}))
                    continue
                reply = self._pending.get(message.get("id", -1))
                if reply is None or reply.done():
                    continue
                if "error" in message:
                    reply.set_exception(CdpError(f"{message['error']}"))
                else:
                    reply.set_result(message.get("result", {}))
        finally:
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(CdpError("the browser closed the DevTools connection"))

    async def close(self) -> None:
        self._reader.cancel()
        await self._socket.close()


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Cdp]:
    """The DevTools connection at ``url`` (ws://…/devtools/browser/…), closed after."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
    ):
        cdp = Cdp(ws)
        try:
            yield cdp
        finally:
            await cdp.close()


async def open_page(cdp: Cdp, width: int, height: int) -> str:
    """A new blank tab of ``width`` by ``height`` CSS pixels; its session id for ``send``."""
    target = await cdp.send("Target.createTarget", {"url": "about:blank"})
    attached = await cdp.send(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
    )
    session: str = attached["sessionId"]
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    await cdp.send("Emulation.setDeviceMetricsOverride", metrics, session)
    return session


async def evaluate(cdp: Cdp, session: str, expression: str) -> Any:
    """The value of a JavaScript ``expression`` in the page (JSON-able values only; that of
    the promise it is, once it resolves)."""
    params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
    result = await cdp.send("Runtime.evaluate", params, session)
    if "exceptionDetails" in result:
        raise CdpError(f"{expression!r} failed: {result['exceptionDetails']}")
    return result["result"].get("value")
