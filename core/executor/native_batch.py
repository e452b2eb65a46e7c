"""A ``llama_batch`` whose arrays are numpy buffers, so a batch is filled with slice writes."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

_I32P = ctypes.POINTER(ctypes.c_int32)


class NativeBatch:
    """Room for ``capacity`` tokens, each in exactly one sequence.

    ``llama_batch_init`` allocates one seq-id array per token; filling that through ctypes costs
    several native calls per token. Here every array is a numpy buffer we own, and the struct
    just points at them, so appending a whole prompt chunk is a handful of vector writes.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        stride = self.seq.itemsize
        base = self.seq.ctypes.data
        self._seq_ptrs = (_I32P * capacity)(
            *(ctypes.cast(base + i * stride, _I32P) for i in range(capacity))
        )
        struct: Any = llama_cpp.llama_batch()  # its stubs type pointers as arrays
        struct.token = self.token.ctypes.data_as(_I32P)
        struct.embd = None
        struct.pos = self.pos.ctypes.data_as(_I32P)
        struct.n_seq_id = self.n_seq_id.ctypes.data_as(_I32P)
        struct.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(_I32P))
        struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.struct: Any = struct
        self.n_tokens = 0

    @property
    def free(self) -> int:
        return self.capacity - self.n_tokens

    def clear(self) -> None:
        self.n_tokens = 0

    def add(
        self, seq_id: int, tokens: Sequence[int], first_pos: int, want_last_logits: bool
    ) -> int:
        """Append tokens of one sequence at consecutive positions; return the batch index of the
        last one (where its logits will be)."""
        n = len(tokens)
        start, end = self.n_tokens, self.n_tokens + n
        if n == 0 or end > self.capacity:
            raise ValueError(f"cannot add {n} tokens to a batch with {self.free} free slots")
        self.token[start:end] = tokens
        self.pos[start:end] = np.arange(first_pos, first_pos + n, dtype=np.int32)
        self.seq[start:end] = seq_id
        self.logits[start:end] = 0
        if want_last_logits:
            self.logits[end - 1] = 1
        self.n_tokens = end
        return end - 1

    def as_struct(self) -> Any:
        self.struct.n_tokens = self.n_tokens
        return self.struct
