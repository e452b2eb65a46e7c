"""A Textual driver that stands in for a terminal, for measuring and testing what the app
really writes: a headless driver skips rendering, this one gets every screen update as the
terminal text a real driver would write."""

from __future__ import annotations

from collections.abc import Callable

from textual.driver import Driver
from textual.drivers.headless_driver import HeadlessDriver


def stand_in_terminal(on_write: Callable[[str], None]) -> type[Driver]:
    """A driver class whose ``write`` hands each update's terminal text to ``on_write``
    (run the app with ``run_test(headless=False)`` and ``driver_class`` set to it)."""

    class StandInTerminal(HeadlessDriver):
        @property
        def is_headless(self) -> bool:
            return False  # so that the app renders its updates, as for a terminal

        def write(self, data: str) -> None:
            on_write(data)

    return StandInTerminal
