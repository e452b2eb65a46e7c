"""What each browser tab of ``panechat serve`` runs: panechat, in a session of its own.

As the leader of its own session and process group, the tab's panechat and everything it
starts (a model's engine process, the template worker) can be ended by the server with one
signal to the group, whatever state they are in; and the signals of the server's terminal
(Ctrl-C, a hang-up) reach only the server, which then tells each tab to quit."""

from __future__ import annotations

import contextlib
import os
import sys

from tui.cli import main

if __name__ == "__main__":  # not again in a model's child process (spawn imports this)
    with contextlib.suppress(PermissionError):  # it leads its group already: run by hand
        os.setsid()
    sys.exit(main())
