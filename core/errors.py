"""Every error panechat raises on purpose derives from one base class.

Callers (the app, the demo, scripts) catch ``PanechatError`` to turn a known failure into one
clear line for the user; anything else is a bug and should surface as a traceback.
"""

from __future__ import annotations


class PanechatError(Exception):
    """Base class of every deliberate panechat error; its message is fit to show a user."""


class ModelLoadError(PanechatError):
    """The model file is missing, unreadable, not a GGUF, or llama.cpp refused it."""


class NamedModelError(ModelLoadError):
    """A model the config names could not be loaded. Its message names the model (a pane's
    notice); ``reason`` alone says why, for a caller whose user gave only one model, and
    ``setting`` is the ``[context]`` key to blame when the context does not fit."""

    def __init__(self, message: str, reason: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.setting = setting

    @classmethod
    def said(cls, model: str, reason: str) -> NamedModelError:
        """A failure with its own words: "model 'x': <reason>"."""
        return cls(f"model {model!r}: {reason}", reason)

    @classmethod
    def could_not(cls, model: str, what: str, why: str) -> NamedModelError:
        """A failure no check foresaw: "model 'x' could not <what>: <why>"."""
        words = f"could not {what}: {why}"
        return cls(f"model {model!r} {words}", f"the model {words}")

    @classmethod
    def does_not_fit(
        cls, model: str, reason: str, setting: str, beside: tuple[str, ...] = ()
    ) -> NamedModelError:
        """Its context does not fit (beside the models named in ``beside``)."""
        others = f" beside {', '.join(repr(n) for n in beside)}" if beside else ""
        return cls(f"model {model!r} does not fit{others}: {reason}", reason, setting)

    def __reduce__(self) -> tuple[type[NamedModelError], tuple[str, str, str | None]]:
        return (type(self), (str(self), self.reason, self.setting))  # across a process


class ModelLoadCancelledError(ModelLoadError):
    """A load was stopped on purpose, from its progress observer (the app quit meanwhile)."""


class InvalidParamsError(PanechatError, ValueError):
    """Context or sampling parameters are out of range."""


class ExecutorDisposedError(PanechatError):
    """The executor was closed; nothing can be created, prompted or decoded any more."""


class ExecutorBusyError(PanechatError):
    """A decode is running; the context cannot be touched until ``infer()`` returns."""


class ConversationDisposedError(PanechatError):
    """The conversation was disposed; its sequence id may already belong to another one."""


class AlreadyPromptedError(PanechatError):
    """The conversation already has tokens waiting for ``infer()``; prompt again after it."""


class RequiresInferenceError(PanechatError):
    """The operation needs the queued tokens decoded first: call ``infer()``."""


class NoLogitsError(PanechatError):
    """There are no fresh logits to sample: prompt, then ``infer()``, then sample."""


class ForkPendingTokensError(PanechatError):
    """A conversation with undecoded tokens cannot be forked: its KV is not complete yet."""


class SequencePoolExhaustedError(PanechatError):
    """All ``n_seq_max`` sequence ids are in use: dispose a conversation or raise n_seq_max."""


class RewindError(PanechatError, ValueError):
    """A rewind asked for more tokens than the conversation holds."""


class KvShiftError(PanechatError):
    """The KV cache of this model or context cannot be shifted, or the range is invalid."""


class StateError(PanechatError):
    """A saved conversation state is corrupt, of another version, or from another model."""


class TemplateError(PanechatError):
    """The chat template could not render the messages."""


def one_line(error: BaseException) -> str:
    """An unexpected error as one line: its type and its message, whitespace folded."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
