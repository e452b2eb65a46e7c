"""Per-conversation sampling: settings, and the native llama.cpp sampler chain built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import cast

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.errors import InvalidParamsError, NoLogitsError, PanechatError
from core.sampling.candidates import (
    CandidateArray,
    PenaltyHistory,
    by_logit,
    min_p_ids,
    top_k_ids,
    top_p_ids,
)

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


class Prefilter(Enum):
    """How a chain's candidates are found before its native samplers run
    (core.sampling.candidates)."""

    ARGMAX = "argmax"  # plain greedy: the first highest logit, no chain at all
    TOP_K = "top-k"  # the chain starts with top-k: only the k largest logits matter
    TOP_P = "top-p"  # no top-k: the top-p cut, computed here over the whole row
    MIN_P = "min-p"  # min-p alone: logits near the highest, and the penalties' history
    NONE = "none"  # temperature alone: every logit can be drawn

    @classmethod
    def for_params(cls, p: SamplingParams) -> Prefilter:
        if p.greedy:
            return cls.TOP_K if p.penalized else cls.ARGMAX
        if p.top_k > 0:
            return cls.TOP_K
        if p.top_p < 1.0:
            return cls.TOP_P
        if p.min_p > 0.0:
            return cls.MIN_P
        return cls.NONE


class SamplerChain:
    """Owns one native ``llama_sampler`` chain; clone it to give a fork the same state.

    Order: top-k first (the vocabulary of Gemma 3 has 262k entries, and penalties walk every
    candidate), then penalties, top-p, min-p, temperature, and the random draw. Penalized greedy
    keeps the 64 best before its penalties and greedy pick.

    The chain never sees the whole row. llama.cpp's ``llama_sampler_sample`` would copy all
    262k logits into a candidate array (0.28 to 0.8 ms per token); instead :class:`Prefilter`
    finds the only candidates the chain could keep (the top-k or top-p stage itself, or
    min-p's reach) on the row in place, and the chain runs on those (~0.1 ms). Each native
    sampler sees the same values in the same order as it would have, so the pick is the same
    (barring exact ties, whose order llama.cpp leaves to its sort). Temperature alone still
    hands llama.cpp the whole row. The row is only read, never altered, so a fork may still
    sample it. ``reference=True`` builds the plain chain on
    the whole row: the tests' yardstick.
    """

    def __init__(
        self,
        params: SamplingParams,
        n_vocab: int,
        *,
        reference: bool = False,
        _handle: llama_cpp.llama_sampler_p | None = None,
        _history: PenaltyHistory | None = None,
    ) -> None:
        self.params = params
        self._n_vocab = n_vocab
        self._reference = reference
        self.prefilter = Prefilter.NONE if reference else Prefilter.for_params(params)
        self._top_k = max(params.top_k, 64) if params.greedy else params.top_k
        self._history = (
            _history
            if _history is not None
            else PenaltyHistory(
                params.repeat_last_n if params.penalized else 0,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        )
        self._candidates = CandidateArray(min(max(self._top_k, 256), n_vocab))
        #: The last row's ids by logit, highest first, when the top-k stage found them (for
        #: :func:`core.sampling.token_choice.token_choice`); None after another stage.
        self.ranked: npt.NDArray[np.intp] | None = None
        self._chain: llama_cpp.llama_sampler_p | None = (
            _handle if _handle is not None else self._build(params, n_vocab, self.prefilter)
        )

    @staticmethod
    def _build(p: SamplingParams, n_vocab: int, done: Prefilter) -> llama_cpp.llama_sampler_p:
        """The native chain, less the stage the pre-filter ``done`` already applied."""
        with_top_k = done is not Prefilter.TOP_K
        with_top_p = done is not Prefilter.TOP_P
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: llama_cpp.llama_sampler_p) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if p.greedy:
            if p.penalized:
                if with_top_k:
                    add(llama_cpp.llama_sampler_init_top_k(max(p.top_k, 64)))
                add(_penalties(p, n_vocab))
            add(llama_cpp.llama_sampler_init_greedy())
            return cast("llama_cpp.llama_sampler_p", chain)
        if p.top_k > 0 and with_top_k:
            add(llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.penalized:
            add(_penalties(p, n_vocab))
        if p.top_p < 1.0 and with_top_p:
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
        if self.prefilter is Prefilter.NONE:  # every logit is a candidate: llama.cpp's own copy
            logits_row(ctx, output_index, self._n_vocab)  # raises if the row is missing
            self.ranked = None
            token = int(llama_cpp.llama_sampler_sample(self.handle, ctx, output_index))
            self._history.push(token)  # llama_sampler_sample accepted it natively
            return token
        return self.sample_row(logits_row(ctx, output_index, self._n_vocab))

    def sample_row(self, row: npt.NDArray[np.float32]) -> int:
        """Sample (and accept) a token from a row of logits, which is left as it was."""
        prefilter = self.prefilter
        self.ranked = None
        if prefilter is Prefilter.ARGMAX:
            return int(row.argmax())
        sort = False
        if prefilter is Prefilter.TOP_K:
            ids, sort = by_logit(top_k_ids(row, self._top_k), row), True
            self.ranked = ids
        elif prefilter is Prefilter.TOP_P:
            ids = top_p_ids(row, self.params.top_p, self._history)
        elif prefilter is Prefilter.MIN_P:
            ids = min_p_ids(row, self.params.min_p, self._history)
        else:  # the whole row (sample() hands it to llama.cpp directly instead)
            ids = np.arange(self._n_vocab, dtype=np.intp)
        chain = self.handle
        self._candidates.fill(ids, row[ids], sort)
        llama_cpp.llama_sampler_apply(chain, self._candidates.pointer)
        token = self._candidates.selected_token()
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """Tell the chain about a token (for the repetition penalties); sampling does this."""
        if not 0 <= token < self._n_vocab:
            raise InvalidParamsError(
                f"token id {token} is outside the vocabulary (0..{self._n_vocab - 1})"
            )
        llama_cpp.llama_sampler_accept(self.handle, token)
        self._history.push(token)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.handle)
        self._history.clear()

    def clone(self) -> SamplerChain:
        """A copy with the same history and random state."""
        return SamplerChain(
            self.params,
            self._n_vocab,
            reference=self._reference,
            _handle=cast("llama_cpp.llama_sampler_p", llama_cpp.llama_sampler_clone(self.handle)),
            _history=self._history.clone(),
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
