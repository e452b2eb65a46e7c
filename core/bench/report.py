"""The benchmark's output: plain-text tables for the terminal, and one JSON document."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any

from core.native.machine import cores_available, cpu_name, distribution_version


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns separated by two spaces, with a rule under the header."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f} ms"


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, Python and llama-cpp-python versions."""
    llama_version = distribution_version("llama-cpp-python")
    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cores_available": cores_available(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_version,
    }


def to_jsonable(value: Any) -> Any:
    """Dataclasses (with their derived properties) to plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        data = {k: to_jsonable(v) for k, v in asdict(value).items() if k != "texts"}
        for name in dir(type(value)):
            if isinstance(getattr(type(value), name, None), property):
                data[name] = to_jsonable(getattr(value, name))
        return data
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, date):  # an AMX trial's verdict is dated
        return value.isoformat()
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(to_jsonable(document), indent=2) + "\n")
