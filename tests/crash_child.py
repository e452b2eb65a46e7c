"""The process the kill test kills: two chats on the real model, recorded to a sessions file
the way the app records them, each event printed (and flushed) before and after it happens.

    python tests/crash_child.py SESSIONS.db

Prints ``SENT <chat> <text>`` once a user turn is committed, ``TEXT <chat> <json fragment>``
for every streamed fragment, as it reaches the recorder, and ``SAVED <message id> <json text>``
(a checkpoint) or ``FINAL <message id> <json text>`` (a whole reply) once a reply's text is
committed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pane_trees import PaneTrees

from core import (
    BatchedExecutor,
    ContextParams,
    LlamaWeights,
    SamplingParams,
    model_template,
    resolve_model_path,
)
from core.chat import ChatConfig, ChatEngine, OpenChat, SendTurn
from tui.session_recorder import SessionRecorder
from tui.session_store import SessionStore

#: With this system prompt the embedded model answers at length (a long greedy run).
SYSTEM = "A helpful assistant answers briefly."
QUESTIONS = ("Count from one to fifty in words.", "List the numbers from one to forty.")


class ReportingStore(SessionStore):
    """Says what it committed, so the test knows, whatever the timing, what the file must
    still hold after the kill."""

    def update_message(self, message_id: int, text: str, tokens: str | None = None) -> None:
        super().update_message(message_id, text, tokens)
        print("SAVED" if tokens is None else "FINAL", message_id, json.dumps(text), flush=True)


def main(path: Path) -> None:
    trees = PaneTrees()
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
                text = f"{question} (turn {turn})"
                recorder.message(chat, trees.user(chat, text))  # committed before the model sees it
                print("SENT", chat, text, flush=True)
                engine.submit(SendTurn(chat, text))
            while engine.busy:
                frame = engine.step()
                for chat, delta in (frame.deltas if frame else {}).items():
                    print("TEXT", chat, json.dumps(delta.text), flush=True)
                    reply = trees.reply(chat) if delta.started else None
                    recorder.frame(chat, delta, reply)
            turn += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]))
