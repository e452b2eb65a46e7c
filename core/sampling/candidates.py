"""Candidate pre-filters: the few tokens a sampler chain can pick, found on the logits in place.

llama.cpp's ``llama_sampler_sample`` copies the whole logits row into a candidate array before
its chain runs: 262,144 entries for Gemma 3, 0.28 to 0.8 ms per sampled token on 2-core
Xeons, spent building and partially sorting that array (and evicting the weights from the
caches). A chain that starts with top-k only ever looks at the k largest logits, and a chain
whose first cut is min-p only at logits within ``log(min_p)`` of the highest (after
penalties); top-p is cut here with llama.cpp's own float32 arithmetic. So we find those tokens
with NumPy on the row in place, hand the chain an array of just them, and it picks exactly
what it would have picked from the whole row: the same samplers run on the same values in the
same order.
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from collections.abc import Iterable

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.errors import PanechatError

#: Matches ``llama_token_data``: token id, logit, probability.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
#: Rows per sampled element when top-k looks for a threshold on a strided sample of the row.
_STRIDE = 64
#: Slack under a min-p threshold, so float rounding never drops a token the chain would keep.
_THRESHOLD_SLACK = 1e-3

Row = npt.NDArray[np.float32]
Ids = npt.NDArray[np.intp]


def top_k_ids(row: Row, k: int) -> Ids:
    """The ids of the ``k`` largest logits, in no particular order.

    A full ``argpartition`` of 262k floats costs ~0.34 ms. Instead: the k-th largest value of
    every 64th logit is a threshold that at least k logits reach (those k sampled ones), and
    about 64·k do; the k largest are among them.
    """
    n = row.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.intp)
    sample = row[::_STRIDE]
    if sample.shape[0] > k:
        threshold = np.partition(sample, -k)[-k]
        ids = np.flatnonzero(row >= threshold)
        if ids.shape[0] > k:
            return ids[np.argpartition(row[ids], -k)[-k:]]
        if ids.shape[0] == k:
            return ids
    return np.argpartition(row, -k)[-k:]


def by_logit(ids: Ids, row: Row) -> Ids:
    """``ids`` with the highest logit first, as llama.cpp's top-k leaves its candidates (ties
    by id: llama.cpp leaves their order to its sort)."""
    ids = np.sort(ids)
    return ids[np.argsort(-row[ids], kind="stable")]


def top_p_ids(row: Row, top_p: float, history: PenaltyHistory) -> Ids:
    """The ids top-p keeps (after penalties) from the whole row, highest logit first.

    Computed as llama.cpp computes it, so the cut is the same: float32 probabilities, their
    normalizer summed one after another in id order (``np.cumsum``, not the pairwise
    ``np.sum``), and a float32 running sum in logit order. Only the normalizer needs every
    logit (one ``exp`` pass); the cut is found among the largest, taking more of them until
    it lies above every logit not taken.
    """
    n = row.shape[0]
    values = row
    recent = history.ids()
    if recent.shape[0]:
        values = row.copy()
        values[recent] = history.penalized_row(recent, row[recent])
    top = values.max()
    if not np.isfinite(top):  # NaN or all -inf: let the native chain see the whole row
        return np.arange(n, dtype=np.intp)
    weights = np.exp(values - top)
    total = np.cumsum(weights)[-1]
    limit = np.float32(top_p)
    k = 256
    while True:
        whole = k >= n // 8
        ids = by_logit(np.arange(n, dtype=np.intp) if whole else top_k_ids(values, k), values)
        mass = np.cumsum(weights[ids] / total)
        reached = np.flatnonzero(mass >= limit)
        if reached.shape[0] and (whole or values[ids[reached[0]]] > values[ids[-1]]):
            return ids[: reached[0] + 1]
        if whole:
            return ids
        k *= 4


def min_p_ids(row: Row, min_p: float, history: PenaltyHistory) -> Ids:
    """Every id min-p could keep, and every id the penalties could touch.

    After penalties the highest logit is at least the penalized value of the row's argmax, so
    anything min-p keeps has a logit of at least that plus ``log(min_p)``. Penalties change
    only tokens in the history, so those join the set whatever their logit; the rest keep
    their row value.
    """
    top = int(row.argmax())
    threshold = history.penalized(top, float(row[top])) + math.log(min_p)
    if not math.isfinite(threshold):  # NaN or all -inf: the native chain sees the whole row
        return np.arange(row.shape[0], dtype=np.intp)
    threshold -= _THRESHOLD_SLACK * max(1.0, abs(threshold))
    ids = np.flatnonzero(row >= threshold)
    recent = history.ids()
    if recent.shape[0]:
        ids = np.union1d(ids, recent)
    return ids


class PenaltyHistory:
    """The tokens llama.cpp's penalties sampler remembers (its last ``window`` accepted), kept
    beside the native chain so a pre-filter knows which logits the penalties will change."""

    def __init__(
        self,
        window: int,
        repeat: float = 1.0,
        frequency: float = 0.0,
        presence: float = 0.0,
        recent: Iterable[int] = (),
    ) -> None:
        # llama_sampler_init_penalties clamps a negative window to 0: no penalties at all.
        self._window = max(window, 0)
        self._repeat, self._frequency, self._presence = repeat, frequency, presence
        self._recent: deque[int] = deque()
        self._counts: dict[int, int] = {}
        for token in recent:
            self.push(token)

    def push(self, token: int) -> None:
        """Remember an accepted token, forgetting the oldest beyond the window."""
        if self._window == 0:
            return
        if len(self._recent) == self._window:
            old = self._recent.popleft()
            left = self._counts[old] - 1
            if left:
                self._counts[old] = left
            else:
                del self._counts[old]
        self._recent.append(token)
        self._counts[token] = self._counts.get(token, 0) + 1

    def clear(self) -> None:
        """Forget every token (a chain reset)."""
        self._recent.clear()
        self._counts.clear()

    def clone(self) -> PenaltyHistory:
        """The same window and tokens (a chain clone)."""
        return PenaltyHistory(
            self._window, self._repeat, self._frequency, self._presence, self._recent
        )

    def ids(self) -> Ids:
        """The distinct remembered tokens."""
        return np.fromiter(self._counts, dtype=np.intp, count=len(self._counts))

    def penalized_row(self, ids: Ids, logits: Row) -> Row:
        """Those tokens' logits after penalties, in float32 as llama.cpp computes them."""
        counts = np.array([self._counts.get(int(t), 0) for t in ids], dtype=np.float32)
        repeat = np.float32(self._repeat)
        values = np.where(logits <= 0, logits * repeat, logits / repeat).astype(np.float32)
        penalty = counts * np.float32(self._frequency) + np.float32(self._presence)
        return np.where(counts > 0, values - penalty, logits).astype(np.float32)

    def penalized(self, token: int, logit: float) -> float:
        """The token's logit after penalties, as ``llama_sampler_penalties_apply`` computes."""
        count = self._counts.get(token, 0)
        if count == 0:
            return logit
        logit = logit * self._repeat if logit <= 0 else logit / self._repeat
        return logit - count * self._frequency - self._presence


class CandidateArray:
    """A reusable ``llama_token_data_array`` over a NumPy buffer, for a chain to run on."""

    def __init__(self, capacity: int = 256) -> None:
        self._buffer = np.zeros(capacity, dtype=TOKEN_DATA)
        self._struct = llama_cpp.llama_token_data_array()
        self.pointer = ctypes.pointer(self._struct)

    def fill(self, ids: Ids, logits: Row, sorted_by_logit: bool) -> None:
        """Load these candidates (``sorted_by_logit``: highest first, as top-k leaves them;
        nothing selected) into the array :attr:`pointer` points to, for the chain."""
        n = ids.shape[0]
        if n > self._buffer.shape[0]:
            self._buffer = np.zeros(max(n, 2 * self._buffer.shape[0]), dtype=TOKEN_DATA)
        view = self._buffer[:n]
        view["id"] = ids
        view["logit"] = logits
        view["p"] = 0.0
        s = self._struct
        s.data = ctypes.cast(self._buffer.ctypes.data, llama_cpp.llama_token_data_p)  # type: ignore[assignment]
        s.size = n
        s.selected = -1
        s.sorted = sorted_by_logit

    def selected_token(self) -> int:
        """The token the chain's last sampler selected."""
        s = self._struct
        if not 0 <= s.selected < s.size:
            raise PanechatError(
                "the sampler chain selected no token — its settings left no candidate"
            )
        return int(s.data[s.selected].id)
