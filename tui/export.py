"""Chats to Markdown: one pane, or the whole session with the panes as sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from core.text.printable import printable
from core.text.reasoning import Split, split_reply


@dataclass(frozen=True, slots=True)
class PaneTranscript:
    name: str
    settings: str  # the sampler summary, e.g. "T0.7 k40 rep1.1"
    system: str
    messages: Sequence[tuple[str, str]]  # (role, text), role "user" or "assistant"
    branched_from: str = ""
    model: str = ""  # which model answered ("" when the app runs only one)


def pane_markdown(pane: PaneTranscript, level: int = 1) -> str:
    """The pane as Markdown; control characters are written as their pictures (``␛``), so a
    terminal that shows the file (``cat``) interprets none of them."""
    heading = "#" * level
    lines = [f"{heading} {pane.name}", ""]
    meta = [f"settings: `{pane.settings}`"]
    if pane.model:
        meta.insert(0, f"model: {pane.model}")
    if pane.branched_from:
        meta.append(f"branched from {pane.branched_from}")
    lines += [f"_{' · '.join(meta)}_", ""]
    if pane.system.strip():
        lines += [f"> **System:** {pane.system.strip()}", ""]
    for role, text in pane.messages:
        who = "You" if role == "user" else "Reply"
        split = split_reply(text) if role == "assistant" else Split(answer=text)
        lines += [f"**{who}:**", ""]
        if split.reasoning:  # only there when the export asked for it
            quoted = "\n".join(f"> {line}" for line in split.reasoning.splitlines())
            lines += ["> _Thinking:_", ">", quoted, ""]
        lines += [split.answer.strip() or "_(no reply)_", ""]
    return printable("\n".join(lines))


def session_markdown(panes: Sequence[PaneTranscript], when: datetime | None = None) -> str:
    stamp = (when or datetime.now()).strftime("%Y-%m-%d %H:%M")
    parts = [f"# panechat session, {stamp}", ""]
    parts += [pane_markdown(pane, level=2) for pane in panes]
    return "\n".join(parts).rstrip() + "\n"


def branches_markdown(branches: Sequence[PaneTranscript], when: datetime | None = None) -> str:
    """A pane's every branch, each one whole from the first message (what it shares with the
    others repeated: each section reads on its own)."""
    stamp = (when or datetime.now()).strftime("%Y-%m-%d %H:%M")
    name = branches[0].name if branches else "pane"
    parts = [f"# {printable(name)}: every branch, {stamp}", ""]
    for i, branch in enumerate(branches, 1):
        titled = replace(branch, name=f"Branch {i} of {len(branches)}")
        parts.append(pane_markdown(titled, level=2))
    return "\n".join(parts).rstrip() + "\n"


def write_export(text: str, directory: Path, stem: str, when: datetime | None = None) -> Path:
    """Write ``text`` to a new file in ``directory``; never overwrites an earlier export."""
    directory.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{(when or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    path = directory / f"{base}.md"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{base}-{n}.md"
    path.write_text(text, encoding="utf-8")
    return path
