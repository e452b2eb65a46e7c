"""Per-conversation sampling: settings, and the native llama.cpp sampler chain built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.errors import InvalidParamsError, NoLogitsError, PanechatError

#: A random seed for the dist sampler (llama.cpp's LLAMA_DEFAULT_SEED).
RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one conversation picks its next token. ``temperature=0`` is greedy."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = RANDOM_SEED

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature must be >= 0"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (0.0 <= self.min_p < 1.0, "min_p must be in [0, 1)"),
            (self.repeat_penalty > 0, "repeat_penalty must be > 0 (1 = off)"),
            (self.repeat_last_n >= -1, "repeat_last_n must be >= -1"),
            (math.isfinite(self.frequency_penalty), "frequency_penalty must be finite"),
            (math.isfinite(self.presence_penalty), "presence_penalty must be finite"),
            (0 <= self.seed <= 0xFFFFFFFF, "seed must be a 32-bit unsigned integer"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidParamsError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalized(self) -> bool:
        return (
            self.repeat_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )

    def summary(self) -> str:
        """A short label for a pane title, e.g. ``T0.7 k40 rep1.1``."""
        if self.greedy:
            parts = ["greedy"]
        else:
            parts = [f"T{self.temperature:g}"]
            if self.top_k:
                parts.append(f"k{self.top_k}")
        if self.repeat_penalty != 1.0:
            parts.append(f"rep{self.repeat_penalty:g}")
        return " ".join(parts)


def logits_row(
    ctx: llama_cpp.llama_context_p, output_index: int, n_vocab: int
) -> npt.NDArray[np.float32]:
    """One output row of the last decode, viewed in place (valid until the next decode)."""
    ptr = llama_cpp.llama_get_logits_ith(ctx, output_index)
    if not ptr:
        raise NoLogitsError(f"llama.cpp has no logits at batch row {output_index}")
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,))


class SamplerChain:
    """Owns one native ``llama_sampler`` chain; clone it to give a fork the same state.

    Order: top-k first (the vocabulary of Gemma 3 has 262k entries, and penalties walk every
    candidate), then penalties, top-p, min-p, temperature, and the random draw. The native chain
    copies the logits into its own candidate array, so sampling never alters the context's
    logits that a fork may still read.

    Plain greedy (no penalties) skips the chain: building llama.cpp's candidate array for a
    262k vocabulary costs ~0.3 ms per token, an argmax over the logits in place ~0.03 ms, and
    both pick the first highest logit.
    """

    def __init__(
        self,
        params: SamplingParams,
        n_vocab: int,
        *,
        _handle: llama_cpp.llama_sampler_p | None = None,
    ) -> None:
        self.params = params
        self._n_vocab = n_vocab
        self._argmax = params.greedy and not params.penalized
        self._chain: llama_cpp.llama_sampler_p | None = (
            _handle if _handle is not None else self._build(params, n_vocab)
        )

    @staticmethod
    def _build(p: SamplingParams, n_vocab: int) -> llama_cpp.llama_sampler_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: llama_cpp.llama_sampler_p) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if p.greedy:
            if p.penalized:
                add(llama_cpp.llama_sampler_init_top_k(max(p.top_k, 64)))
                add(_penalties(p, n_vocab))
            add(llama_cpp.llama_sampler_init_greedy())
            return cast("llama_cpp.llama_sampler_p", chain)
        if p.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.penalized:
            add(_penalties(p, n_vocab))
        if p.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(p.temperature))
        add(llama_cpp.llama_sampler_init_dist(p.seed))
        return cast("llama_cpp.llama_sampler_p", chain)

    @property
    def handle(self) -> llama_cpp.llama_sampler_p:
        if self._chain is None:
            raise PanechatError("the sampler chain was freed")
        return self._chain

    def sample(self, ctx: llama_cpp.llama_context_p, output_index: int) -> int:
        """Sample (and accept) a token from one output row of the last decode."""
        if self._argmax:
            return int(logits_row(ctx, output_index, self._n_vocab).argmax())
        return int(llama_cpp.llama_sampler_sample(self.handle, ctx, output_index))

    def accept(self, token: int) -> None:
        """Tell the chain about a token chosen elsewhere (for the repetition penalties)."""
        llama_cpp.llama_sampler_accept(self.handle, token)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.handle)

    def clone(self) -> SamplerChain:
        """A copy with the same history and random state."""
        return SamplerChain(
            self.params,
            self._n_vocab,
            _handle=cast("llama_cpp.llama_sampler_p", llama_cpp.llama_sampler_clone(self.handle)),
        )

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:  # pragma: no cover - depends on GC timing
        if getattr(self, "_chain", None) is not None:
            self.free()


def _penalties(p: SamplingParams, n_vocab: int) -> llama_cpp.llama_sampler_p:
    sampler = llama_cpp.llama_sampler_init_penalties(
        n_vocab, p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
    )
    return cast("llama_cpp.llama_sampler_p", sampler)
