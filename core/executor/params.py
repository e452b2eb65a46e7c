"""Context parameters: how big the shared KV cache and batches are, and how it is computed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from core.errors import InvalidParamsError
from core.native.machine import cores_available

FlashAttention = Literal["auto", "on", "off"]
#: The largest count llama.cpp's context parameters hold as they should (int32 / uint32).
INT32_MAX = 2**31 - 1


def default_threads() -> int:
    """Physical-core-ish default: llama.cpp gains nothing from SMT siblings, and loses from
    oversubscription, so use every core we are allowed to run on."""
    return cores_available()


@dataclass(frozen=True, slots=True)
class ContextParams:
    """Parameters of the one llama.cpp context an executor owns, and how its batches are filled.

    ``kv_unified`` is on by default: all sequences then share one pool of ``n_ctx`` cells, so a
    fork shares its parent's prefix cells for free and any conversation may grow to ``n_ctx``.
    With it off, llama.cpp splits the cache into ``n_seq_max`` slices of ``n_ctx / n_seq_max``.

    ``adapt_threads`` lets the thread count drop while other processes keep cores busy, and
    come back when they stop (:mod:`core.executor.adaptive_threads`).

    ``max_frame_stretch`` bounds how much a prompt being prefilled may slow the frames of
    conversations that are generating (see :mod:`core.executor.prefill_budget`); 0 turns that off.
    """

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int = 0  # 0: same as n_batch
    n_seq_max: int = 8
    n_threads: int = 0  # 0: every core we may run on
    n_threads_batch: int = 0  # 0: same as n_threads
    kv_unified: bool = True
    flash_attention: FlashAttention = "auto"
    offload_kqv: bool = True
    max_frame_stretch: float = 1.5  # 0: prompts fill whole batches, whoever is generating
    adapt_threads: bool = (
        True  # decode with the cores other processes leave (core.executor.adaptive_threads)
    )

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_batch", "n_seq_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidParamsError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_ubatch", "n_threads", "n_threads_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidParamsError(f"{name} must be 0 (auto) or a positive integer")
        for name in ("n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch"):
            if getattr(self, name) > INT32_MAX:  # llama.cpp would wrap it without a word
                raise InvalidParamsError(f"{name} must be at most {INT32_MAX:,}")
        if self.physical_batch > self.n_batch:
            raise InvalidParamsError(
                f"n_ubatch ({self.n_ubatch}) must not exceed n_batch ({self.n_batch})"
            )
        if self.n_batch < self.n_seq_max:
            raise InvalidParamsError(
                f"n_batch ({self.n_batch}) must be at least n_seq_max ({self.n_seq_max}) so "
                "that every conversation's next token fits in one batch"
            )
        if self.n_seq_max > 256:
            raise InvalidParamsError("n_seq_max must be at most 256 (llama.cpp's LLAMA_MAX_SEQ)")
        if self.n_ctx < 16:
            raise InvalidParamsError(f"n_ctx must be at least 16, got {self.n_ctx}")
        stretch = self.max_frame_stretch
        if not isinstance(stretch, int | float) or not (stretch == 0 or 1 < stretch < 1e6):
            raise InvalidParamsError(
                f"max_frame_stretch must be 0 (off) or greater than 1, got {stretch!r}"
            )
        if not isinstance(self.adapt_threads, bool):
            raise InvalidParamsError(
                f"adapt_threads must be true or false, got {self.adapt_threads!r}"
            )
        if self.flash_attention not in ("auto", "on", "off"):
            raise InvalidParamsError(
                f"flash_attention must be 'auto', 'on' or 'off', got {self.flash_attention!r}"
            )

    @property
    def physical_batch(self) -> int:
        """n_ubatch, with 0 meaning the whole logical batch."""
        return self.n_ubatch or self.n_batch

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()

    @property
    def threads_batch(self) -> int:
        return self.n_threads_batch or self.threads

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
