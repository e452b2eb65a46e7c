"""``python -m tui`` starts the app, like the ``panechat`` command."""

import sys

from tui.cli import main

sys.exit(main())
