"""Edits of one conversation's KV cache that keep its positions consecutive (context shift)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.executor.conversation import Conversation


class KvAccessor:
    """``conversation.kv``: remove a span of a conversation's tokens and close the gap, in place
    where the cache allows it (see :meth:`Conversation.remove_tokens`)."""

    __slots__ = ("_conv",)

    def __init__(self, conversation: Conversation) -> None:
        self._conv = conversation

    @property
    def can_shift(self) -> bool:
        return self._conv.executor.can_shift

    def remove(self, start: int, count: int) -> bool:
        """Drop tokens ``[start, start + count)``. Returns True if the KV was shifted in place,
        False if the tail was queued for re-decoding (then ``requires_inference`` is true)."""
        return self._conv.remove_tokens(start, count)
