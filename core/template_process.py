"""Chat templates rendered in a process of their own, under a time and a memory limit.

A GGUF's template is code from the file's author; rendered in the decode thread, one that
loops for ever would hang every pane, and one that builds a value of many gigabytes would take
the machine down with the app. In :mod:`core.template_worker` it can do neither: the worker
is killed when a render takes longer than :data:`RENDER_SECONDS` (and started again for the
next one), and may not take more than ``template_worker.MEMORY_LIMIT`` of memory. The round
trip costs little next to tokenizing the prompt: measured on a 2-core Xeon, a 40-message chat
renders in 0.5 ms (0.02 ms in this process) and is tokenized in 8 ms; a 2 MB chat renders in
20 ms (1.4 ms) and is tokenized in 650 ms.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from core.template_worker import Outcome, RenderReply, RenderRequest, read_message, write_message

#: The longest one render may take before its process is killed.
RENDER_SECONDS = 2.0
#: How long the process may take to start (Python and Jinja, on a slow or busy machine).
START_SECONDS = 30.0
_WORKER = Path(__file__).with_name("template_worker.py")


class TemplateProcess:
    """One render process, started when first needed and again after it was killed. Any
    thread may render; renders take turns."""

    def __init__(self, render_seconds: float = RENDER_SECONDS) -> None:
        self._render_seconds = render_seconds
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any | None] = queue.Queue()
        self.starts = 0  # processes started so far (one more after each kill)

    def render(self, request: RenderRequest) -> RenderReply:
        """The template's prompt, or why there is none: never raises, never hangs."""
        with self._lock:
            process = self._send(request)
            if process is None:
                return RenderReply(Outcome.FAILED, "its render process did not start")
            try:
                message = self._replies.get(timeout=self._render_seconds)
            except queue.Empty:
                self._kill()
                return RenderReply(
                    Outcome.LIMIT,
                    f"it took more than {self._render_seconds:g} s to render "
                    "(a loop that does not end?)",
                )
            if message is None:  # it died rendering: a native crash, the OOM killer
                self._kill()
                code = process.returncode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                return RenderReply(Outcome.FAILED, f"its render process ended ({how})")
            return RenderReply.from_json(message)

    @property
    def pid(self) -> int | None:
        """The render process's id while one runs (for diagnostics and tests)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _send(self, request: RenderRequest) -> subprocess.Popen[bytes] | None:
        """``request`` sent to a live process; one that ended since the last render (not
        this template's doing) is replaced first. None: none could be started."""
        for _ in range(2):
            if self._process is not None and self._process.poll() is not None:
                self._kill()
            process = self._process or self._start()
            if process is None:
                return None
            assert process.stdin is not None
            try:
                write_message(process.stdin, request.to_json())
                return process
            except OSError:  # it ended as we wrote
                self._kill()
        return None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _start(self) -> subprocess.Popen[bytes] | None:
        """A new process, once it said it is ready (None if it could not start)."""
        try:
            process = subprocess.Popen(
                [sys.executable, "-P", str(_WORKER)],  # -P: its folder is not on sys.path
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # the app owns the terminal
            )
        except OSError:
            return None
        self.starts += 1
        self._replies = queue.Queue()
        assert process.stdout is not None
        threading.Thread(
            target=_read_replies,
            args=(process.stdout, self._replies),
            name="panechat-template-replies",
            daemon=True,
        ).start()
        self._process = process
        try:
            ready = self._replies.get(timeout=START_SECONDS)
        except queue.Empty:
            ready = None
        if not (isinstance(ready, dict) and ready.get("ready")):
            self._kill()
            return None
        return process

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _read_replies(stream: IO[bytes], replies: queue.Queue[Any | None]) -> None:
    """Every message the process writes, then None when its pipe closes."""
    try:
        while (message := read_message(stream)) is not None:
            replies.put(message)
    except (OSError, ValueError):  # closed under it, or a garbled message
        pass
    replies.put(None)


_shared: TemplateProcess | None = None
_shared_lock = threading.Lock()


def shared_template_process() -> TemplateProcess:
    """The process every template of this process renders in (closed at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TemplateProcess()
            atexit.register(_shared.close)
        return _shared
