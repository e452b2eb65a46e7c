"""Edits of one conversation's KV cache that keep its positions consecutive (context shift)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import KvShiftError, RequiresInferenceError

if TYPE_CHECKING:
    from core.conversation import Conversation


class KvAccessor:
    """Remove a span of a conversation's tokens and close the gap.

    When llama.cpp can shift this model's cache and the cells after the span belong to this
    conversation alone, the gap is closed by shifting positions (no decode). Cells below a fork
    point may be shared with another conversation, and shifting a shared cell would move it for
    both; then, as for models that cannot shift, the tail is queued to be decoded again.
    """

    __slots__ = ("_conv",)

    def __init__(self, conversation: Conversation) -> None:
        self._conv = conversation

    @property
    def can_shift(self) -> bool:
        return self._conv.executor.can_shift

    def remove(self, start: int, count: int) -> bool:
        """Drop tokens ``[start, start + count)``. Returns True if the KV was shifted in place,
        False if the tail was queued for re-decoding (then ``requires_inference`` is true)."""
        conv = self._conv
        conv._check_alive()
        if conv._pending:
            raise RequiresInferenceError(
                f"conversation {conv.sequence_id} has queued tokens — call infer() first"
            )
        n = len(conv._tokens)
        if start < 0 or count < 0 or start + count > n:
            raise KvShiftError(
                f"cannot remove tokens [{start}, {start + count}) from a conversation of {n}"
            )
        if count == 0:
            return True
        executor, seq, end = conv.executor, conv.sequence_id, start + count
        tail = conv._tokens[end:]
        shifted = executor.can_shift and end >= conv._shared_upto
        if shifted:
            executor._remove_positions(seq, start, end)
            if tail:
                executor._shift_positions(seq, end, -1, -count)
            del conv._tokens[start:end]
        else:
            executor._remove_positions(seq, start, -1)
            del conv._tokens[start:]
            conv._pending = tail
        conv._shared_upto = min(conv._shared_upto, start)
        conv._logits_index = None
        return shifted
