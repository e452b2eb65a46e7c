"""Theme files (``themes/*.toml``) turned into Textual themes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomli
from textual.theme import Theme

from core import PanechatError

_COLOR_KEYS = (
    "primary", "secondary", "accent", "foreground", "background",
    "surface", "panel", "success", "warning", "error",
)  # fmt: skip


class ThemeError(PanechatError):
    """A theme file that cannot be read, or an unknown theme name."""


def themes_dir() -> Path:
    beside = Path(__file__).resolve().parent.parent / "themes"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "panechat" / "themes"


def load_theme(path: Path) -> Theme:
    try:
        data = tomli.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomli.TOMLDecodeError) as e:
        raise ThemeError(f"cannot load theme {path}: {e}") from e
    name = data.get("name") or path.stem
    if "primary" not in data:
        raise ThemeError(f"theme {path} has no 'primary' colour — every theme needs one")
    colors: dict[str, Any] = {k: str(data[k]) for k in _COLOR_KEYS if k in data}
    try:
        return Theme(name=str(name), dark=bool(data.get("dark", True)), **colors)
    except Exception as e:  # Textual validates colours
        raise ThemeError(f"theme {path}: {e}") from e


def load_themes(directory: Path | None = None) -> list[Theme]:
    folder = directory or themes_dir()
    if not folder.is_dir():
        return []
    return [load_theme(p) for p in sorted(folder.glob("*.toml"))]
