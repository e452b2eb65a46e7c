"""What a caller asks of the chat engine: typed commands, applied in the engine's thread at
the start of its next frame (several submitted together apply in the same frame)."""

from __future__ import annotations

from dataclasses import dataclass

from core.chat.config import ChatConfig
from core.chat.state import SavedState
from core.chat.tree import ChatTree


@dataclass(frozen=True, slots=True)
class Restore:
    """A chat to open again: its tree (its messages keep their ids; the model reads the
    branch shown, ``ChatTree.linear`` makes one from (role, text) pairs), and the decode
    state written when it was last closed, if any (its KV cells: nothing is read again)."""

    tree: ChatTree
    state: SavedState | None = None


@dataclass(frozen=True, slots=True)
class OpenChat:
    chat_id: str
    config: ChatConfig
    restore: Restore | None = None


@dataclass(frozen=True, slots=True)
class CloseChat:
    chat_id: str


@dataclass(frozen=True, slots=True)
class SendTurn:
    chat_id: str
    text: str


@dataclass(frozen=True, slots=True)
class StopChat:
    chat_id: str


@dataclass(frozen=True, slots=True)
class ClearChat:
    chat_id: str


@dataclass(frozen=True, slots=True)
class ForkChat:
    """Open ``chat_id`` as a branch of ``source_id`` at its current point (waits for the
    source's reply in flight, if any, to finish)."""

    source_id: str
    chat_id: str
    config: ChatConfig


@dataclass(frozen=True, slots=True)
class Regenerate:
    chat_id: str


@dataclass(frozen=True, slots=True)
class EditMessage:
    """A new version of user message ``message_id``: a sibling of it, answered in turn, the
    branch below the old version kept (the frame names the new message's id)."""

    chat_id: str
    message_id: int
    text: str


@dataclass(frozen=True, slots=True)
class ShowMessage:
    """Show the branch through ``message_id`` (and on below it, as it was last shown): the KV
    keeps what it shares with that branch and decodes the rest."""

    chat_id: str
    message_id: int


@dataclass(frozen=True, slots=True)
class BranchAtToken:
    """A new version of reply ``message_id``: its first ``index`` tokens kept, then ``token``
    (one the model nearly chose there, or any token of its vocabulary) in place of the one it
    chose, and sampled on from there."""

    chat_id: str
    message_id: int
    index: int
    token: int


@dataclass(frozen=True, slots=True)
class TakeOutChat:
    """Close an idle chat to read it again elsewhere (another model): the engine keeps what
    its model had read for :meth:`ChatEngine.taken_out`, or says the chat is busy."""

    chat_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = (
    OpenChat
    | CloseChat
    | SendTurn
    | StopChat
    | ClearChat
    | ForkChat
    | Regenerate
    | EditMessage
    | ShowMessage
    | BranchAtToken
    | TakeOutChat
    | Shutdown
)
