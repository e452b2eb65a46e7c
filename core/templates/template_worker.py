"""The process chat templates are rendered in, and the messages it exchanges with its parent.

A template from a GGUF is code from the file's author. Jinja's sandbox keeps it from Python's
objects, and ``core.templates.template_sandbox`` refuses the plain ways to make a huge value, but
nothing in one Python process can stop a template that loops for ever or builds a value a
step at a time: this process can be killed instead, and it may not take more than
:data:`MEMORY_LIMIT` bytes of memory beyond what it starts with.

It runs as a script (``python -P core/templates/template_worker.py FD SECONDS``), not as a
module of ``core``, whose package would load llama.cpp: it loads ``template_sandbox.py`` from
its own folder, and needs only the standard library and Jinja. Requests come on its stdin,
replies go to the pipe ``FD`` (-1: its stdout, where a ``sitecustomize`` or a warning may
print otherwise); each is a 4-byte length and JSON. Should its parent die mid-render, it ends
itself after ``SECONDS``; it ignores Ctrl+C (the app decides when it ends), and asks the
kernel's out-of-memory killer to take it before anything else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import struct
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import IO, Any

#: Memory the process may take beyond its own at start (its address space, where the system
#: enforces that limit: Linux and the BSDs; macOS and Windows do not).
MEMORY_LIMIT = 1 << 30
_HEADER = struct.Struct("<I")


class Outcome(StrEnum):
    """How a render ended."""

    TEXT = "text"  # the prompt
    SYNTAX = "syntax"  # the template does not parse
    REFUSED = "refused"  # the template refused the chat (raise_exception, a Jinja error)
    FAILED = "failed"  # the template's own bug (a bad index, a None + str...)
    LIMIT = "limit"  # a check of template_sandbox's
    MEMORY = "memory"  # past MEMORY_LIMIT
    UNAVAILABLE = "unavailable"  # no render process could be started (the parent says why)


@dataclass(frozen=True, slots=True)
class RenderRequest:
    source: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    add_generation_prompt: bool
    bos_token: str
    eos_token: str
    typed_content: bool = False  # each content as [{"type": "text", "text": ...}]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "messages": [list(m) for m in self.messages],
            "add_generation_prompt": self.add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "typed_content": self.typed_content,
        }

    @classmethod
    def from_json(cls, data: Any) -> RenderRequest:
        return cls(
            str(data["source"]),
            tuple((str(role), str(content)) for role, content in data["messages"]),
            bool(data["add_generation_prompt"]),
            str(data["bos_token"]),
            str(data["eos_token"]),
            bool(data.get("typed_content", False)),
        )


@dataclass(frozen=True, slots=True)
class RenderReply:
    outcome: Outcome
    text: str  # the prompt, or what went wrong (one line)

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "text": self.text}

    @classmethod
    def from_json(cls, data: Any) -> RenderReply:
        return cls(Outcome(data["outcome"]), str(data["text"]))


def write_message(stream: IO[bytes], data: dict[str, Any]) -> None:
    payload = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return json.loads(payload.decode("utf-8", "surrogatepass"))


def answer(sandbox: ModuleType, request: RenderRequest) -> RenderReply:
    """Render one request with ``sandbox`` (template_sandbox), whatever the template does."""
    import jinja2

    try:
        text = sandbox.render_chat(
            request.source,
            request.messages,
            add_generation_prompt=request.add_generation_prompt,
            bos_token=request.bos_token,
            eos_token=request.eos_token,
            typed_content=request.typed_content,
        )
        return RenderReply(Outcome.TEXT, text)
    except jinja2.TemplateSyntaxError as e:
        return RenderReply(Outcome.SYNTAX, f"line {e.lineno}: {_folded(e.message or '')}")
    except sandbox.TemplateLimitError as e:
        return RenderReply(Outcome.LIMIT, _folded(str(e)))
    except sandbox.TemplateRefusal as e:
        return RenderReply(Outcome.REFUSED, _folded(str(e)))
    except MemoryError:
        return RenderReply(Outcome.MEMORY, f"it needed more than {MEMORY_LIMIT >> 20} MiB")
    except RecursionError:
        return RenderReply(Outcome.FAILED, "it nests too deep (RecursionError)")
    except Exception as e:
        text = _folded(str(e))
        return RenderReply(
            Outcome.FAILED, f"{type(e).__name__}: {text}" if text else type(e).__name__
        )


def _folded(text: str) -> str:
    return " ".join(text.split())[:500]


def load_sandbox() -> ModuleType:
    """template_sandbox.py from this file's folder, as a module of its own name."""
    path = Path(__file__).with_name("template_sandbox.py")
    spec = importlib.util.spec_from_file_location("panechat_template_sandbox", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # Windows
        return
    try:
        with open("/proc/self/statm") as statm:  # pages of address space now
            now = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        now = 256 << 20
    limit = now + MEMORY_LIMIT
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit already: keep it
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _end_on_its_own() -> None:
    """The backstops: an alarm whose default action ends the process (even in a C call),
    Ctrl+C ignored, and first in line for the out-of-memory killer."""
    if hasattr(signal, "setitimer"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")


def _alarm(seconds: float) -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, seconds)


def main() -> int:
    requests = sys.stdin.buffer
    reply_fd, own_limit = int(sys.argv[1]), float(sys.argv[2])
    replies = os.fdopen(reply_fd, "wb") if reply_fd >= 0 else sys.stdout.buffer
    _end_on_its_own()
    sandbox = load_sandbox()
    _limit_memory()
    write_message(replies, {"ready": True})
    too_long = RenderReply(Outcome.MEMORY, "the chat is too long to render").to_json()
    while True:
        try:
            message = read_message(requests)
            if message is None:
                return 0
            _alarm(own_limit)
            payload = _answer_message(sandbox, message)
        except MemoryError:  # the chat itself, read or answered, is past the limit
            payload = too_long
        finally:
            message = None
            _alarm(0)
        try:
            write_message(replies, payload)
        except MemoryError:
            write_message(replies, too_long)
        payload = too_long


def _answer_message(sandbox: ModuleType, message: Any) -> dict[str, Any]:
    try:
        request = RenderRequest.from_json(message)
    except (KeyError, TypeError, ValueError) as e:
        return RenderReply(Outcome.FAILED, f"a malformed request: {e}").to_json()
    return answer(sandbox, request).to_json()


if __name__ == "__main__":
    sys.exit(main())
