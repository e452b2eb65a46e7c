"""One browser tab's panechat, as ``panechat serve`` runs it: textual-serve's AppService, plus
the one thing it lacks, ending a process that does not quit when asked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from asyncio.subprocess import Process

from textual_serve.app_service import AppService

QUIT_WAIT = 30.0  # seconds a tab's panechat gets to quit (and save its session) when asked
TERM_WAIT = 5.0  # seconds it gets to exit after SIGTERM, before SIGKILL


class ServedTab(AppService):
    """A tab's panechat process. It leads a process group of its own (tui/served_app.py), so
    that ``end`` reaches everything it started too."""

    process: Process | None = None

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        self.process = await super()._open_app_process(width, height)
        return self.process

    async def end(self, quit_wait: float = QUIT_WAIT, term_wait: float = TERM_WAIT) -> None:
        """Ask the tab's panechat to quit, as when its tab closes; if it is still running after
        ``quit_wait`` seconds, SIGTERM its group, and SIGKILL it after ``term_wait`` more. A
        stopped process is continued first: it could neither quit nor die of SIGTERM. If this
        is cancelled (a second Ctrl-C), the group is killed at once."""
        try:
            self.signal(signal.SIGCONT)
            quitting = asyncio.ensure_future(self.stop())  # sends the quit, reads the output
            for sig, wait in (
                (None, quit_wait),
                (signal.SIGTERM, term_wait),
                (signal.SIGKILL, term_wait),
            ):
                if sig is not None:
                    self.signal(sig)
                    self.signal(signal.SIGCONT)
                if await self._exits_within(wait):
                    break
            self._kill_what_it_left()
            # Its output ends with it (and with its group, which holds the same pipes).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quitting, term_wait)
        except asyncio.CancelledError:
            self.signal(signal.SIGKILL)
            self.signal(signal.SIGCONT)
            raise

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the tab's process group, and to the process itself (in the moment
        before it has made its group). Nothing once it has exited: its id may be reused."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        for send in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(process.pid, sig)

    def _kill_what_it_left(self) -> None:
        """Whatever of its group outlived the tab's panechat (a worker it started): killed,
        right after the panechat was reaped. The group's id is not given to a new process
        while any member is alive, so this reaches only them."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def _exits_within(self, seconds: float) -> bool:
        if self.process is None:
            return True
        try:
            await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            return False
        return True
