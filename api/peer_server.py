"""llama-cpp-python's own server (``llama_cpp.server``) as the api bench runs it beside
``panechat api``: with the weight layout panechat chose for this CPU, so that both load the
same weights the same way (and no AMX where AMX crashes; ``llama_cpp.server`` has no setting
for it). ``python -m api.peer_server LAYOUT [llama_cpp.server options]``."""

from __future__ import annotations

import sys

from core.native.weight_layout import WeightLayout, resolve_layout, withholding


def main() -> None:
    layout = resolve_layout(WeightLayout.parse(sys.argv[1]))
    sys.argv = ["python -m llama_cpp.server", *sys.argv[2:]]
    from llama_cpp.server.__main__ import main as serve

    with withholding(layout):  # the model loads inside, then the server runs until stopped
        serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
