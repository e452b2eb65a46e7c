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
    ``G(g) + c * p`` seconds. ``G`` is learned per ``g`` from frames without prompt tokens (its
    cost is not linear in ``g``: llama.cpp picks different matmul kernels), ``c`` from mixed
    frames. ``max_stretch=None`` turns the cap off (throughput first).
    """

    def __init__(self, max_stretch: float | None = 1.5, min_chunk: int = 8) -> None:
        if max_stretch is not None and not (math.isfinite(max_stretch) and max_stretch > 1.0):
            raise ValueError("max_stretch must be > 1 (or None to fill whole batches)")
        self.max_stretch = max_stretch
        self.min_chunk = max(1, min_chunk)
        self._generators_seconds: dict[int, float] = {}
        self._prompt_token_seconds: float | None = None

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

    def observe(self, generators: int, prompt_tokens: int, seconds: float) -> None:
        """Record one successful decode."""
        if seconds <= 0:
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


def _ema(old: float | None, new: float) -> float:
    return new if old is None else old + _ALPHA * (new - old)
