"""How many prompt tokens may share a batch with generating conversations.

A decode's time grows with its tokens. If a 1,500-token prompt filled whole batches while other
conversations were streaming, each of those frames would take ~0.5 s on a small CPU, and every
stream would stall that long. llama.cpp's server does exactly that (chunks of ``n_batch``). Here
each frame gets only as many prompt tokens as keep it within ``max_stretch`` times the time of a
frame that decodes the generators alone, learned from the frames themselves. A prompt that
arrives while nothing is generating still fills whole batches.
"""

from __future__ import annotations

import math

#: Weight of the newest measurement in the running averages.
_ALPHA = 0.25


class PrefillBudget:
    """Learns frame costs and caps the prompt tokens of frames that carry generators.

    Model: a frame with ``g`` generating conversations and ``p`` prompt tokens takes
    ``G(g) + c * p`` seconds, plus the cost of a logits row when the chunk ends its prompt.
    ``G`` is learned per ``g`` from frames without prompt tokens (its cost is not linear in
    ``g``: llama.cpp picks different matmul kernels), ``c`` from mixed frames. A logits row is
    costed as one more generator, ``G(g + 1) - G(g)``: on the embedded model the 262k-row
    output head makes one row cost ~6 ms, a fifth of a 4-generator frame, which is enough to
    push the frame that completes a prompt past the cap. ``max_stretch=None`` turns the cap
    off (throughput first).
    """

    def __init__(self, max_stretch: float | None = 1.5, min_chunk: int = 8) -> None:
        if max_stretch is not None and not (math.isfinite(max_stretch) and max_stretch > 1.0):
            raise ValueError("max_stretch must be > 1 (or None to fill whole batches)")
        self.max_stretch = max_stretch
        self.min_chunk = max(1, min_chunk)
        self._generators_seconds: dict[int, float] = {}
        self._prompt_token_seconds: float | None = None
        self._frozen = False

    @property
    def prompt_token_seconds(self) -> float | None:
        """The learned cost of one prompt token in a mixed frame (None: not learned yet)."""
        return self._prompt_token_seconds

    def reset(self) -> None:
        """Forget the learned costs (when they no longer hold); a few frames learn them again."""
        self._generators_seconds.clear()
        self._prompt_token_seconds = None

    def freeze(self) -> None:
        """Stop learning and keep the costs learned so far, for runs that must be repeatable."""
        self._frozen = True

    def limit(self, generators: int, free: int) -> int:
        """Prompt tokens allowed in a frame that already holds ``generators`` single tokens."""
        if self.max_stretch is None or generators == 0:
            return free
        base = self._frame_seconds(generators)
        per_token = self._prompt_token_seconds
        if base is None or per_token is None or per_token <= 0:
            return min(self.min_chunk, free)  # learn the costs with a small chunk first
        allowed = int((self.max_stretch - 1.0) * base / per_token)
        return max(self.min_chunk, min(allowed, free))

    def output_reserve(self, generators: int) -> int:
        """Prompt tokens a completing chunk gives up for its logits row (0 when uncapped)."""
        if self.max_stretch is None or generators == 0:
            return 0
        row = self._output_row_seconds(generators)
        per_token = self._prompt_token_seconds
        if row is None or per_token is None or per_token <= 0:
            return 0
        return math.ceil(row / per_token)

    def observe(
        self, generators: int, prompt_tokens: int, seconds: float, prompt_outputs: int = 0
    ) -> None:
        """Record one successful decode (``prompt_outputs``: chunks that ended their prompt)."""
        if seconds <= 0 or self._frozen:
            return
        if prompt_tokens == 0:
            if generators:
                self._generators_seconds[generators] = _ema(
                    self._generators_seconds.get(generators), seconds
                )
            return
        base = self._frame_seconds(generators) if generators else 0.0
        if base is None:
            return
        if prompt_outputs and generators:
            base += prompt_outputs * (self._output_row_seconds(generators) or 0.0)
        per_token = max(seconds - base, 0.0) / prompt_tokens
        self._prompt_token_seconds = _ema(self._prompt_token_seconds, per_token)

    def _frame_seconds(self, generators: int) -> float | None:
        """G(g), or the nearest measured count scaled linearly (an overestimate below)."""
        known = self._generators_seconds
        if generators in known:
            return known[generators]
        if not known:
            return None
        nearest = min(known, key=lambda g: abs(g - generators))
        return known[nearest] * generators / nearest

    def _output_row_seconds(self, generators: int) -> float | None:
        base, more = self._frame_seconds(generators), self._frame_seconds(generators + 1)
        if base is None or more is None:
            return None
        return max(more - base, 0.0)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else old + _ALPHA * (new - old)
