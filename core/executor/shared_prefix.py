"""Conversations that start with the same tokens (a system prompt) decode them only once.

The first conversation opened with a prefix prompts it; once that is decoded, every later one
with the same prefix is a fork of a conversation that still starts with it, rewound to the
prefix: its KV cells are shared, nothing is decoded again. So opening 8 panes with one persona
costs one prefill of the persona, not eight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.executor.conversation import Conversation
from core.sampling.sampling import SamplingParams

if TYPE_CHECKING:
    from core.executor.executor import BatchedExecutor


class PrefillInFlight(Exception):
    """The prefix is being decoded for another conversation: open again after ``infer()``."""


@dataclass(frozen=True, slots=True)
class PrefixSharing:
    """Conversations opened on a prefix: ``shared`` reused another's cells, ``prefilled``
    decoded the prefix themselves."""

    prefilled: int
    shared: int


class SharedPrefixes:
    """Opens conversations on a prefix, sharing the KV cells of one that already holds it."""

    def __init__(self, executor: BatchedExecutor) -> None:
        self._executor = executor
        self._holders: dict[tuple[int, ...], list[Conversation]] = {}
        self.shared = 0  # conversations opened by sharing (for tests and the bench)
        self.prefilled = 0  # conversations that had to decode the prefix themselves

    def open(
        self,
        prefix: Sequence[int],
        sampling: SamplingParams | None = None,
        *,
        wait: bool = True,
    ) -> Conversation:
        """A conversation holding ``prefix`` (decoded, or queued when no other has it).

        Raises :class:`PrefillInFlight` when another conversation is still decoding the same
        prefix and none holds it yet (waiting one ``infer()`` is cheaper than decoding twice),
        unless ``wait=False``: then it queues the prefix itself.
        """
        key = tuple(int(t) for t in prefix)
        if not key:
            return self._executor.create(sampling)
        holders = self._holders.setdefault(key, [])
        holders[:] = [c for c in holders if not c.is_disposed and c.begins_with(key)]
        donor = next((c for c in holders if not c.requires_inference), None)
        if donor is not None:
            child = donor.fork(sampling)
            child.rewind(child.token_count - len(key))
            holders.append(child)
            self.shared += 1
            return child
        if wait and any(c.token_count < len(key) for c in holders):
            raise PrefillInFlight("the same prefix is being decoded — open after the next infer()")
        conv = self._executor.create(sampling)
        conv.prompt(list(key))
        holders.append(conv)
        self.prefilled += 1
        return conv

    def sharing(self) -> PrefixSharing:
        return PrefixSharing(self.prefilled, self.shared)
