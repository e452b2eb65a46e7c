"""Whether a context fits the model and the machine, checked before llama.cpp allocates it.

llama.cpp takes any ``n_ctx``: beyond the model's trained context it only warns (and the
replies degrade), and an ``n_ctx`` too big for the memory grows the process until the machine
swaps or the kernel kills it. So the executor asks first: the trained context bounds ``n_ctx``,
and the KV cache's size, estimated from the model's shape, must fit in the memory available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidParamsError

#: Bytes per K or V element: llama.cpp's default cache type is f16.
KV_ELEMENT_BYTES = 2
#: Share of the available memory the KV cache may take (the weights and buffers need room).
KV_MEMORY_SHARE = 0.8


class ContextTooLargeError(InvalidParamsError):
    """``n_ctx`` is beyond what the model was trained for, or what the memory holds."""

    key = "n_ctx"


@dataclass(frozen=True, slots=True)
class KvShape:
    """What one token costs in the KV cache: per layer, a K and a V row per KV head."""

    layers: int
    kv_heads: int
    key_length: int
    value_length: int

    def bytes_per_token(self) -> int:
        return (
            self.layers * self.kv_heads * (self.key_length + self.value_length) * (KV_ELEMENT_BYTES)
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping (None: unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_context(n_ctx: int, n_ctx_train: int, shape: KvShape | None, memory: int | None) -> None:
    """Raise ContextTooLargeError when ``n_ctx`` exceeds the trained context, or when its KV
    cache (``shape`` per token) would not fit in ``memory`` bytes; None skips that check
    (KV on a GPU, or a shape or memory that cannot be read)."""
    if n_ctx_train > 0 and n_ctx > n_ctx_train:
        raise ContextTooLargeError(
            f"n_ctx = {n_ctx:,} is more than this model was trained for ({n_ctx_train:,} "
            f"tokens) — set n_ctx to at most {n_ctx_train}"
        )
    if shape is None or memory is None:
        return
    need = n_ctx * shape.bytes_per_token()
    if need > memory * KV_MEMORY_SHARE:
        fits = max(16, int(memory * KV_MEMORY_SHARE) // max(shape.bytes_per_token(), 1))
        raise ContextTooLargeError(
            f"n_ctx = {n_ctx:,} needs about {need / 2**30:.1f} GiB of KV cache and "
            f"{memory / 2**30:.1f} GiB of memory is available — set n_ctx to at most {fits}"
        )
