"""Cancelling a running decode through llama.cpp's abort callback, without taking the GIL.

ggml asks the abort callback once per graph node (hundreds of times per decode). A Python
callback would have to take the GIL each time and would stall the decode whenever the UI thread
holds it. Instead the callback is libc's ``strlen`` pointed at a two-byte flag: it returns 0
while the flag is clear and 1 once it is set, which the C ABI reads as ``false``/``true``.
Where libc cannot be found, a Python callback is used instead (slower, same behaviour).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

import llama_cpp


class CancellationToken:
    """Set it from any thread to abort the ``infer()`` that was given it."""

    __slots__ = ("_flag",)

    def __init__(self) -> None:
        self._flag = ctypes.create_string_buffer(2)  # b"\0\0": strlen == 0

    def cancel(self) -> None:
        self._flag[0] = b"\x01"

    def reset(self) -> None:
        self._flag[0] = b"\x00"

    @property
    def cancelled(self) -> bool:
        return self._flag[0] != b"\x00"

    @property
    def address(self) -> int:
        """Where the native callback reads the flag."""
        return ctypes.addressof(self._flag)


def _load_strlen() -> Any | None:
    names = ["msvcrt"] if sys.platform == "win32" else [None, ctypes.util.find_library("c")]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            return lib.strlen
        except (OSError, AttributeError, TypeError):
            continue
    return None


def _python_abort(data: int | None) -> bool:
    return bool(data) and ctypes.c_char.from_address(data or 0).value != b"\x00"


def native_abort_callback() -> Any:
    """The ``ggml_abort_callback`` to install on a context (keep a reference to it)."""
    strlen = _load_strlen()
    if strlen is not None:
        address = ctypes.cast(strlen, ctypes.c_void_p).value
        if address:
            return llama_cpp.ggml_abort_callback(address)
    return llama_cpp.ggml_abort_callback(_python_abort)  # pragma: no cover - no libc
