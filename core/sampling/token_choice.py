"""What a sampled token was chosen from: its probability and the likeliest other tokens, read
off the logits row the sampler used (to show why a model said what it said)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.sampling.candidates import by_logit, top_k_ids

#: The tokens probabilities are taken over: the model's likeliest, at temperature 1. What lies
#: beyond the 40th is left out (a share that rounds to nothing in all but the flattest rows),
#: which keeps this to the top-k stage's own candidates, already found for the default panes.
POOL = 40
#: How many other tokens a choice keeps.
ALTERNATIVES = 5


@dataclass(frozen=True, slots=True)
class TokenChoice:
    """A sampled token, its probability, and the likeliest other tokens with theirs (most
    likely first). Probabilities are the model's own (temperature 1, no penalties) over its
    :data:`POOL` likeliest tokens."""

    token: int
    probability: float
    alternatives: tuple[tuple[int, float], ...]


def token_choice(
    row: npt.NDArray[np.float32], token: int, ranked: npt.NDArray[np.intp] | None = None
) -> TokenChoice:
    """``token``'s choice from ``row``; ``ranked`` is the row's ids by logit, highest first,
    when the sampler already has them (at least :data:`POOL` of them), else found here."""
    if ranked is None or ranked.shape[0] < min(POOL, row.shape[0]):
        ranked = by_logit(top_k_ids(row, POOL), row)
    pool = ranked[:POOL]
    logits = row[pool].astype(np.float64)
    top = float(logits[0]) if np.isfinite(logits[0]) else 0.0
    weights = np.exp(logits - top)
    total = float(weights.sum())
    chosen = np.flatnonzero(pool == token)
    if chosen.shape[0]:
        weight = float(weights[chosen[0]])
    else:  # drawn from beyond the pool (a flat row, top-k off)
        weight = float(np.exp(float(row[token]) - top))
        total += weight
    if not total > 0 or not np.isfinite(total):
        return TokenChoice(token, 0.0, ())
    others = [(int(i), float(w) / total) for i, w in zip(pool, weights, strict=True) if i != token]
    return TokenChoice(token, weight / total, tuple(others[:ALTERNATIVES]))
