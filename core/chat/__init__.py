"""The headless multi-chat engine: several chats with one model, decoded together.

A :class:`ChatEngine` owns a :class:`core.BatchedExecutor` in a thread of its own. Callers
:meth:`~ChatEngine.submit` typed commands (open a chat, send a turn, stop, fork, regenerate…)
and receive one :class:`Frame` per decode step through the ``emit`` callback: every chat's new
text, finished replies with their :class:`core.StopReason`, notices, and figures. Nothing here
imports Textual; the app (``tui``) is one view of it, a script another.
"""

from core.chat.chat_context import ChatContext, HeldTurn
from core.chat.chat_model import EMBEDDED, ChatModel, ModelSpec
from core.chat.commands import (
    BranchAtToken,
    ClearChat,
    CloseChat,
    Command,
    EditMessage,
    ForkChat,
    OpenChat,
    Regenerate,
    Restore,
    SendTurn,
    ShowMessage,
    Shutdown,
    StopChat,
)
from core.chat.config import ChatConfig
from core.chat.engine import ChatEngine
from core.chat.engine_group import DEFAULT, ChatEngineGroup, GroupCommand, SwitchModel
from core.chat.engine_process import EngineProcess
from core.chat.frames import ChatDelta, EngineEvent, EngineFailure, Frame, FrameStats
from core.chat.model_engine import ModelEngine
from core.chat.model_loader import LoadedModel, engine_of, load_model
from core.chat.model_loading import ModelLoading
from core.chat.notices import Notice, NoticeKind
from core.chat.session import ChatSession
from core.chat.state import ChatSnapshot, Exchange, SavedState, TurnState
from core.chat.token_stats import Alternative, TokenStat
from core.chat.tree import ChatTree, Role, Siblings, TreeChange, TreeMessage

__all__ = [
    "DEFAULT",
    "EMBEDDED",
    "Alternative",
    "BranchAtToken",
    "ChatConfig",
    "ChatContext",
    "ChatDelta",
    "ChatEngine",
    "ChatEngineGroup",
    "ChatModel",
    "ChatSession",
    "ChatSnapshot",
    "ChatTree",
    "ClearChat",
    "CloseChat",
    "Command",
    "EditMessage",
    "EngineEvent",
    "EngineFailure",
    "EngineProcess",
    "Exchange",
    "ForkChat",
    "Frame",
    "FrameStats",
    "GroupCommand",
    "HeldTurn",
    "LoadedModel",
    "ModelEngine",
    "ModelLoading",
    "ModelSpec",
    "Notice",
    "NoticeKind",
    "OpenChat",
    "Regenerate",
    "Restore",
    "Role",
    "SavedState",
    "SendTurn",
    "ShowMessage",
    "Shutdown",
    "Siblings",
    "StopChat",
    "SwitchModel",
    "TokenStat",
    "TreeChange",
    "TreeMessage",
    "TurnState",
    "engine_of",
    "load_model",
]
