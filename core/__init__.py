"""panechat's headless core: a batched executor over one llama.cpp context.

Modelled on LLamaSharp's ``BatchedExecutor``: the executor owns the model's context;
``executor.create()`` opens a :class:`Conversation`; conversations are prompted, one
``infer()`` decodes all their queued tokens in one batch, and each samples its own next token.
"""

from core.errors import (
    AlreadyPromptedError,
    ConversationDisposedError,
    ExecutorBusyError,
    ExecutorDisposedError,
    ForkPendingTokensError,
    InvalidParamsError,
    KvShiftError,
    ModelLoadError,
    NoLogitsError,
    PanechatError,
    RequiresInferenceError,
    RewindError,
    SequencePoolExhaustedError,
    StateError,
    TemplateError,
)
from core.executor.cancellation import CancellationToken
from core.executor.context_budget import ContextTooLargeError
from core.executor.conversation import Conversation
from core.executor.conversation_state import ConversationState
from core.executor.decode_result import DecodeResult
from core.executor.executor import BatchedExecutor, DecodeStats
from core.executor.params import ContextParams
from core.executor.shared_prefix import PrefillInFlight, PrefixSharing, SharedPrefixes
from core.models.model_path import embedded_model_path, resolve_model_path
from core.models.weights import LlamaWeights
from core.native.weight_layout import LayoutChoice, WeightLayout
from core.sampling.sampling import SamplingParams
from core.templates.chat_template import ChatFormat, ChatMessage, ChatTemplate
from core.templates.jinja_template import JinjaTemplate
from core.templates.template_choice import TEMPLATE_NAMES, model_template, template_for
from core.text.reply_stream import ReplyStream, StopReason

__all__ = [
    "TEMPLATE_NAMES",
    "AlreadyPromptedError",
    "BatchedExecutor",
    "CancellationToken",
    "ChatFormat",
    "ChatMessage",
    "ChatTemplate",
    "ContextParams",
    "ContextTooLargeError",
    "Conversation",
    "ConversationDisposedError",
    "ConversationState",
    "DecodeResult",
    "DecodeStats",
    "ExecutorBusyError",
    "ExecutorDisposedError",
    "ForkPendingTokensError",
    "InvalidParamsError",
    "JinjaTemplate",
    "KvShiftError",
    "LayoutChoice",
    "LlamaWeights",
    "ModelLoadError",
    "NoLogitsError",
    "PanechatError",
    "PrefillInFlight",
    "PrefixSharing",
    "ReplyStream",
    "RequiresInferenceError",
    "RewindError",
    "SamplingParams",
    "SequencePoolExhaustedError",
    "SharedPrefixes",
    "StateError",
    "StopReason",
    "TemplateError",
    "WeightLayout",
    "embedded_model_path",
    "model_template",
    "resolve_model_path",
    "template_for",
]
