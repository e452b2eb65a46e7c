"""The process the kill test kills: two chats on the real model, recorded to a sessions file
the way the app records them, each event printed (and flushed) before and after it happens.

    python tests/crash_child.py SESSIONS.db

Prints ``SENT <chat> <text>`` when a frame says the engine took a user turn (committed with
that frame, right after), ``TEXT <chat> <json fragment>``
for every streamed fragment, as it reaches the recorder, and ``SAVED <message id> <json text>``
(a checkpoint) or ``FINAL <message id> <json text>`` (a whole reply) once a reply's text is
committed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core import (
    BatchedExecutor,
    ContextParams,
    LlamaWeights,
    SamplingParams,
    StopReason,
    model_template,
    resolve_model_path,
)
from core.chat import ChatConfig, ChatEngine, OpenChat, Role, SendTurn
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore

#: With this system prompt the embedded model answers at length (a long greedy run).
SYSTEM = "A helpful assistant answers briefly."
QUESTIONS = ("Count from one to fifty in words.", "List the numbers from one to forty.")


class ReportingStore(SessionStore):
    """Says what it committed, so the test knows, whatever the timing, what the file must
    still hold after the kill."""

    def update_message(
        self,
        message_id: int,
        text: str,
        tokens: str | None = None,
        stop: StopReason | None = None,
    ) -> None:
        super().update_message(message_id, text, tokens, stop)
        print("SAVED" if tokens is None else "FINAL", message_id, json.dumps(text), flush=True)


def main(path: Path) -> None:
    store = ReportingStore(path)
    session = store.create_session("crash test")
    recorder = SessionRecorder(store, session, lambda message: print("ERROR", message))
    with LlamaWeights.load(resolve_model_path(None)) as weights:
        executor = BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2))
        engine = ChatEngine(executor, model_template(weights))
        config = ChatConfig("c", SYSTEM, SamplingParams(temperature=0.0), 400, ())
        chats = ("a", "b")
        for chat in chats:
            recorder.pane_opened(chat, config, "")
            engine.submit(OpenChat(chat, config))
        turn = 0
        while True:
            for chat, question in zip(chats, QUESTIONS, strict=True):
                engine.submit(SendTurn(chat, f"{question} (turn {turn})"))
            while engine.busy:
                frame = engine.step()
                for chat, delta in (frame.deltas if frame else {}).items():
                    for change in delta.tree_changes:  # a turn the engine took
                        for message in change.messages:
                            if message.role is Role.USER:
                                print("SENT", chat, message.text, flush=True)
                    print("TEXT", chat, json.dumps(delta.text), flush=True)
                    recorder.frame(chat, delta)  # commits them
            turn += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]))
