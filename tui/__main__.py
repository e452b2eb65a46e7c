"""``python -m tui`` starts the app, like the ``panechat`` command."""

import sys

from tui.cli import main

if __name__ == "__main__":  # not again in a model's child process (spawn imports this)
    sys.exit(main())
