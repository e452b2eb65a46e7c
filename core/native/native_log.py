"""Route llama.cpp's own log lines into Python's ``logging`` instead of raw stderr.

llama-cpp-python prints every native log line to stderr by default, which would scribble over a
terminal UI. Here they go to the ``panechat.llama_cpp`` logger, where the app (or a script) can
decide what to keep.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp

logger = logging.getLogger("panechat.llama_cpp")
# Silent unless the application configures logging (no "last resort" stderr output).
logger.addHandler(logging.NullHandler())

# enum ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continuation).
_LEVELS = {
    0: logging.INFO,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
}
_state = {"last": logging.INFO}
#: Lists that :func:`capture` is filling: every line, whatever the logger's level.
_captures: list[list[str]] = []


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    py_level = _LEVELS.get(level, _state["last"])  # 5 = continuation of the previous line
    _state["last"] = py_level
    if _captures or logger.isEnabledFor(py_level):
        message = text.decode("utf-8", errors="replace").rstrip()
        if py_level >= logging.INFO:
            for lines in _captures:
                lines.append(message)
        if message.strip(".") and logger.isEnabledFor(py_level):
            logger.log(py_level, "%s", message)


_installed = False


def install() -> None:
    """Install the forwarding callback once per process (idempotent)."""
    global _installed
    if not _installed:
        llama_cpp.llama_log_set(_forward, ctypes.c_void_p(0))
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
        _installed = True


@contextmanager
def capture() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines of level INFO and above while the block runs (e.g. what a
    model load says about its buffers), whatever the logger lets through."""
    install()
    lines: list[str] = []
    _captures.append(lines)
    try:
        yield lines
    finally:
        _captures.remove(lines)
