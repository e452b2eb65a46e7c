"""How far a model load has got: llama.cpp's ``progress_callback`` turned into calls of a
plain Python observer with a fraction from 0.0 to 1.0.

A 4-8 GB GGUF takes many seconds to load (minutes over RPC), so a user needs a sign of life.
llama.cpp calls the callback from inside ``llama_model_load_from_file``, in the loading
thread, once per tensor or so. Nothing may raise back into C there, and the ctypes callback
must stay referenced for the whole load (C holds only its address)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import llama_cpp

#: Told how far a load has got (0.0 to 1.0, never decreasing). Returning ``False`` cancels
#: the load; any other value (``None`` included) lets it go on.
ProgressObserver = Callable[[float], object]

_log = logging.getLogger("panechat.load_progress")


class LoadProgress:
    """One load's progress, fed to ``observer``: fractions that only grow, ending at 1.0 once
    :meth:`finish` is called. An observer that raises is dropped (the load goes on); Ctrl+C
    in the callback cancels the load, and :attr:`interrupted` says so, for the caller to
    raise KeyboardInterrupt once llama.cpp has returned."""

    def __init__(self, observer: ProgressObserver) -> None:
        self._observer: ProgressObserver | None = observer
        self._last = -1.0
        self.interrupted = False  # Ctrl+C arrived while llama.cpp was loading
        self.cancelled = False  # the observer asked to stop
        self._callback = llama_cpp.llama_progress_callback(self._on_progress)

    def attach(self, params: llama_cpp.llama_model_params) -> None:
        """Point ``params`` at this callback (keep this object alive until the load ends)."""
        params.progress_callback = self._callback  # its user data stays NULL: unused

    @property
    def stopped(self) -> bool:
        """The load was cut short on purpose (Ctrl+C, or the observer said stop)."""
        return self.interrupted or self.cancelled

    def report(self, fraction: float) -> bool:
        """Tell the observer, unless the load is no further than last time; returns whether
        the load should go on."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if fraction <= self._last or self._observer is None:
            return True
        self._last = fraction
        if self._observer(fraction) is False:
            self.cancelled = True
        return not self.cancelled

    def finish(self) -> None:
        """The load succeeded: 1.0, should llama.cpp's last call have stopped short of it."""
        try:
            self.report(1.0)
        except Exception:
            _log.exception("a model load progress observer failed")

    def _on_progress(self, fraction: float, _user_data: ctypes.c_void_p | None) -> bool:
        """The C callback: never raises (a Python exception cannot cross into llama.cpp)."""
        try:
            return self.report(fraction)
        except KeyboardInterrupt:
            self.interrupted = True
            return False
        except BaseException:
            _log.exception("a model load progress observer failed; it is not called again")
            self._observer = None
            return True
