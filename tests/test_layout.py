"""``core/`` stays split by concern (issue #26): few entries at its top level, and no module of
``core``, ``tui`` or ``api`` imports itself through others (``scripts/import_cycles.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_has_at_most_twelve_modules_and_packages_at_its_top() -> None:
    entries = sorted(
        p.name
        for p in (ROOT / "core").iterdir()
        if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__")
    )
    assert len(entries) <= 12, entries


def test_core_tui_and_api_have_no_import_cycles() -> None:
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts" / "import_cycles.py"
    )
    assert spec is not None and spec.loader is not None
    import_cycles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(import_cycles)
    assert import_cycles.find_cycles(ROOT, ("core", "tui", "api")) == []


def test_core_imports_neither_view() -> None:
    """``core`` is the library the app and the server are built on: it imports neither."""
    for path in (ROOT / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in ("tui", "api", "textual"), f"{path}: {line}"
