"""Copy text to the system clipboard, falling back to the terminal's OSC 52 escape."""

from __future__ import annotations

import shutil
import subprocess
import sys

_COMMANDS = (
    ("pbcopy",),
    ("wl-copy",),
    ("xclip", "-selection", "clipboard"),
    ("xsel", "--clipboard", "--input"),
    ("clip.exe",),
)


def copy_with_system_tool(text: str) -> bool:
    """Try the platform's clipboard command; False when none is installed or it failed."""
    for command in _COMMANDS:
        if command[0] == "pbcopy" and sys.platform != "darwin":
            continue
        if shutil.which(command[0]) is None:
            continue
        try:
            subprocess.run(command, input=text.encode(), check=True, timeout=2, capture_output=True)
            return True
        except (OSError, subprocess.SubprocessError):
            continue
    return False
