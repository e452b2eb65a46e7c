"""A bounded pool of llama.cpp sequence ids, so ids never grow past ``n_seq_max``."""

from __future__ import annotations

import heapq

from core.errors import SequencePoolExhaustedError


class SequenceIdPool:
    """Hands out the lowest free id in ``[0, size)`` and takes ids back on dispose.

    LLamaSharp once handed out ever-growing ids, which broke after ``n_seq_max`` conversations
    had been created over a long session; reusing freed ids keeps them in range forever.
    """

    __slots__ = ("_free", "_in_use", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = list(range(size))
        heapq.heapify(self._free)
        self._in_use: set[int] = set()

    def acquire(self) -> int:
        if not self._free:
            raise SequencePoolExhaustedError(
                f"all {self.size} sequence ids are in use — dispose a conversation first, "
                "or create the executor with a larger n_seq_max"
            )
        seq_id = heapq.heappop(self._free)
        self._in_use.add(seq_id)
        return seq_id

    def release(self, seq_id: int) -> None:
        if seq_id in self._in_use:
            self._in_use.remove(seq_id)
            heapq.heappush(self._free, seq_id)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)
