"""Chat templates rendered in a process of their own, under a time and a memory limit.

A GGUF's template is code from the file's author; rendered in the decode thread, one that
loops for ever would hang every pane, and one that builds a value of many gigabytes would take
the machine down with the app. In :mod:`core.templates.template_worker` it can do neither: the
worker is killed when a render (its request written, its reply read) takes longer than
:data:`RENDER_SECONDS`, and started again for the next one; it may not take more than
``template_worker.MEMORY_LIMIT`` of memory, and ends itself should this process die. The round
trip costs little next to tokenizing the prompt: measured on a 2-core Xeon, a 40-message chat
renders in 0.5 ms (0.02 ms in this process) and is tokenized in 8 ms; a 2 MB chat renders in
20 ms (1.4 ms) and is tokenized in 650 ms.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from core.templates.template_worker import (
    Outcome,
    RenderReply,
    RenderRequest,
    read_message,
    write_message,
)

#: The longest one render may take before its process is killed.
RENDER_SECONDS = 2.0
#: A render this long ends the process by itself, should this one not be there to kill it.
OWN_LIMIT_SECONDS = 10.0
#: How long the process may take to start (Python and Jinja, on a slow or busy machine).
START_SECONDS = 30.0
_WORKER = Path(__file__).with_name("template_worker.py")


class TemplateProcess:
    """One render process, started when first needed and again after it was killed. Any
    thread may render; renders take turns."""

    def __init__(
        self, render_seconds: float = RENDER_SECONDS, own_limit_seconds: float = OWN_LIMIT_SECONDS
    ) -> None:
        """``own_limit_seconds``: the render time past which the process ends itself (for
        when this process died or stopped while it rendered)."""
        self._render_seconds = render_seconds
        self._own_limit_seconds = own_limit_seconds
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any | None] = queue.Queue()
        self._unavailable: str | None = None  # why no process could start: not tried again
        self._closed = False
        self.starts = 0  # processes started so far (one more after each kill)

    def render(self, request: RenderRequest) -> RenderReply:
        """The template's prompt, or why there is none: never raises, never hangs."""
        with self._lock:
            if self._closed:
                return RenderReply(Outcome.UNAVAILABLE, "panechat is quitting")
            process = self._send(request)
            if process is None:
                return RenderReply(Outcome.UNAVAILABLE, self._unavailable or "it did not start")
            try:
                message = self._replies.get(timeout=self._render_seconds)
            except queue.Empty:
                self._kill()
                return RenderReply(
                    Outcome.LIMIT,
                    f"it did not finish in {self._render_seconds:g} s (a loop that does not end?)",
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

    def close(self) -> None:
        """End the process; later renders are refused (at exit, a daemon thread may still
        render: nothing would end a process started then)."""
        with self._lock:
            self._closed = True
            self._kill()

    def _send(self, request: RenderRequest) -> subprocess.Popen[bytes] | None:
        """``request`` sent to a live process; one that ended since the last render (not
        this template's doing) is replaced first. The write has the render's time too: a
        process that stopped reading is killed, and the write fails. None: none started."""
        for _ in range(2):
            if self._process is not None and self._process.poll() is not None:
                self._kill()
            process = self._process or self._start()
            if process is None:
                return None
            assert process.stdin is not None
            watchdog = threading.Timer(self._render_seconds, _kill_quietly, (process,))
            watchdog.daemon = True
            watchdog.start()
            try:
                write_message(process.stdin, request.to_json())
                return process
            except OSError:  # it ended as we wrote, or was killed for not reading
                self._kill()
            finally:
                watchdog.cancel()
        return None

    def _start(self) -> subprocess.Popen[bytes] | None:
        """A new process, once it said it is ready; None (and the reason kept) if it could
        not start."""
        if self._unavailable is not None:
            return None
        with tempfile.TemporaryFile() as errors:  # why a start failed: the app owns the tty
            process = self._spawn(errors)
            if process is None:
                return None
            try:
                ready = self._replies.get(timeout=START_SECONDS)
            except queue.Empty:
                ready = None
            if not (isinstance(ready, dict) and ready.get("ready")):
                self._kill()
                self._unavailable = f"its render process did not start ({_last_line(errors)})"
                return None
        return process

    def _spawn(self, errors: IO[bytes]) -> subprocess.Popen[bytes] | None:
        """The process and the thread that reads its replies. Replies come on a pipe of
        their own (its stdout may carry what a ``sitecustomize`` prints); -P keeps its
        folder off sys.path."""
        reply_fd, child_fd = os.pipe() if os.name == "posix" else (-1, -1)
        command = [sys.executable, "-P", str(_WORKER), str(child_fd), str(self._own_limit_seconds)]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL if child_fd >= 0 else subprocess.PIPE,
                stderr=errors,
                pass_fds=(child_fd,) if child_fd >= 0 else (),
            )
        except OSError as e:
            if reply_fd >= 0:
                os.close(reply_fd)
            self._unavailable = f"{sys.executable or 'no Python'} would not run: {e.strerror}"
            return None
        finally:
            if child_fd >= 0:
                os.close(child_fd)
        self.starts += 1
        self._replies = queue.Queue()
        reader = os.fdopen(reply_fd, "rb") if reply_fd >= 0 else process.stdout
        assert reader is not None
        threading.Thread(
            target=_read_replies,
            args=(reader, self._replies),
            name="panechat-template-replies",
            daemon=True,
        ).start()
        self._process = process
        return process

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _kill_quietly(process)
        process.wait()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()


def _kill_quietly(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        process.kill()


def _last_line(stream: IO[bytes]) -> str:
    """What a process that failed to start last wrote on its stderr, or that it wrote none."""
    with contextlib.suppress(OSError):
        stream.seek(0)
        lines = stream.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        if lines:
            return lines[-1][:300]
    return "it said nothing"


def _read_replies(stream: IO[bytes], replies: queue.Queue[Any | None]) -> None:
    """Every message the process writes, then None when its pipe closes."""
    try:
        while (message := read_message(stream)) is not None:
            replies.put(message)
    except (OSError, ValueError):  # closed under it, or a garbled message
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()
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
