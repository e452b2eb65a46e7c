"""The pre-filtered sampler picks what llama.cpp's own chain picks from the whole row.

Three yardsticks: the native chain over every logit (``reference=True``, what
``llama_sampler_sample`` does), which must draw the very same tokens for the same seed; an
independent NumPy model of the chain's distribution, against which many seeded draws pass a
chi-square test (seeds are fixed, so the verdict is too); and what penalties must do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace

import llama_cpp
import numpy as np
import numpy.typing as npt
import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights
from core.sampling.candidates import CandidateArray, PenaltyHistory, top_k_ids, top_p_ids
from core.sampling.sampling import Prefilter, SamplerChain, SamplingParams

Row = npt.NDArray[np.float32]

SETTINGS = {
    "pane default": SamplingParams(
        temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1
    ),
    "top-k only": SamplingParams(temperature=0.8, top_k=40, top_p=1.0, min_p=0.0),
    "min-p only": SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.05),
    "min-p, penalties both ways": SamplingParams(
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        min_p=0.02,
        repeat_penalty=1.3,
        frequency_penalty=0.2,
        presence_penalty=-0.6,
    ),
    "top-p only": SamplingParams(temperature=1.2, top_k=0, top_p=0.9, min_p=0.0),
    "top-p and min-p, penalties": SamplingParams(
        temperature=0.9, top_k=0, top_p=0.95, min_p=0.05, repeat_penalty=1.2
    ),
    "greedy with penalties": SamplingParams(temperature=0.0, repeat_penalty=1.5),
    "temperature alone": SamplingParams(temperature=0.9, top_k=0, top_p=1.0, min_p=0.0),
}


@pytest.fixture(scope="module")
def rows(weights: LlamaWeights) -> Iterator[list[Row]]:
    """Two real logits rows of the embedded model: a peaked one and a flatter one."""
    executor = BatchedExecutor(weights, ContextParams(n_ctx=512, n_seq_max=2))
    found: list[Row] = []
    try:
        for text in ("The capital of France is", "My favourite word is"):
            conv = executor.create()
            conv.prompt(text)
            assert executor.infer_sync().ok
            found.append(conv.logits())
            conv.dispose()
    finally:
        executor.close()
    yield found


def history_for(row: Row) -> list[int]:
    """Recent tokens that include the row's best ones, so that penalties matter."""
    best = [int(t) for t in np.argsort(row)[::-1][:4]]
    return [best[0], best[1], best[0], best[3], 17, best[0]]


def primed(
    params: SamplingParams, n_vocab: int, history: Sequence[int], *, reference: bool = False
) -> SamplerChain:
    chain = SamplerChain(params, n_vocab, reference=reference)
    for token in history:
        chain.accept(token)
    return chain


@pytest.mark.parametrize("name", list(SETTINGS))
def test_same_seed_draws_the_same_tokens_as_the_whole_row_chain(rows: list[Row], name: str) -> None:
    """The native samplers see the same values in the same order, so every draw is the same
    token."""
    params = SETTINGS[name]
    for row in rows:
        history = history_for(row)
        fast = primed(replace(params, seed=1234), row.shape[0], history)
        reference = primed(replace(params, seed=1234), row.shape[0], history, reference=True)
        before = row.copy()
        drawn = [fast.sample_row(row) for _ in range(150)]
        assert drawn == [reference.sample_row(row) for _ in range(150)]
        assert np.array_equal(row, before), "sampling must leave the logits row as it was"
        fast.free()
        reference.free()


@pytest.mark.parametrize("name", ["top-p only", "top-p and min-p, penalties"])
def test_the_top_p_cut_is_llama_cpps(rows: list[Row], name: str) -> None:
    """Top-p is cut here, over the whole row, with llama.cpp's float32 sums: the same tokens
    in the same order as its own top-p over every logit. (A float64 cut differed from it by up
    to 21 tail tokens on these rows.)"""
    params = SETTINGS[name]
    flat = np.random.default_rng(5).standard_normal(262_144).astype(np.float32)
    for row in [*rows, flat]:
        history = history_for(row)
        window = PenaltyHistory(
            params.repeat_last_n if params.penalized else 0,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
            history,
        )
        ours = top_p_ids(row, params.top_p, window)
        theirs = native_top_p(row, params, history)
        assert sorted(ours.tolist()) == sorted(theirs)  # the same cut
        assert np.array_equal(row[ours], row[theirs])  # the same order, up to exact ties
        probs = penalized_softmax(row, params, history)
        mass = np.cumsum(probs[ours])
        assert abs(mass[-1] - params.top_p) < 1e-3 or len(ours) == 1


def penalized_softmax(
    row: Row, p: SamplingParams, history: Sequence[int]
) -> npt.NDArray[np.float64]:
    values = row.astype(np.float64)
    window = history[-p.repeat_last_n :] if p.penalized and p.repeat_last_n > 0 else []
    for token, count in Counter(window).items():
        v = values[token]
        v = v * p.repeat_penalty if v <= 0 else v / p.repeat_penalty
        values[token] = v - count * p.frequency_penalty - p.presence_penalty
    e: npt.NDArray[np.float64] = np.exp(values - values.max())
    probabilities: npt.NDArray[np.float64] = e / e.sum()
    return probabilities


def native_top_p(row: Row, params: SamplingParams, history: Sequence[int]) -> list[int]:
    """llama.cpp's own penalties and top-p over the whole row: the ids it keeps, in order."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.penalized:
        llama_cpp.llama_sampler_chain_add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                row.shape[0],
                params.repeat_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ),
        )
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    for token in history:
        llama_cpp.llama_sampler_accept(chain, token)
    candidates = CandidateArray(row.shape[0])
    candidates.fill(np.arange(row.shape[0]), row, False)
    array = candidates.pointer
    llama_cpp.llama_sampler_apply(chain, array)
    kept = [int(array.contents.data[i].id) for i in range(array.contents.size)]
    llama_cpp.llama_sampler_free(chain)
    return kept


def test_every_setting_uses_a_prefilter_but_temperature_alone() -> None:
    chosen = {name: Prefilter.for_params(p) for name, p in SETTINGS.items()}
    assert chosen["temperature alone"] is Prefilter.NONE
    assert chosen["pane default"] is Prefilter.TOP_K
    assert chosen["min-p only"] is Prefilter.MIN_P
    assert chosen["top-p only"] is Prefilter.TOP_P
    assert Prefilter.for_params(SamplingParams(temperature=0.0)) is Prefilter.ARGMAX


def expected_distribution(row: Row, p: SamplingParams, history: Sequence[int]) -> dict[int, float]:
    """The chain's distribution, computed from its definition (not from llama.cpp's code)."""
    logits = row.astype(np.float64)
    ids = np.arange(row.shape[0])
    k = max(p.top_k, 64) if p.greedy else p.top_k
    if k > 0:
        ids = np.argsort(-logits, kind="stable")[:k]
    values = logits[ids].copy()
    window = history[-p.repeat_last_n :] if p.penalized and p.repeat_last_n > 0 else []
    for token, count in Counter(window).items():
        where = np.flatnonzero(ids == token)
        for i in where:
            v = values[i]
            v = v * p.repeat_penalty if v <= 0 else v / p.repeat_penalty
            values[i] = v - count * p.frequency_penalty - p.presence_penalty
    if p.greedy:
        return {int(ids[int(np.argmax(values))]): 1.0}
    if p.top_p < 1.0:
        order = np.argsort(-values, kind="stable")
        probs = np.exp(values[order] - values.max())
        mass = np.cumsum(probs / probs.sum())
        keep = order[: int(np.searchsorted(mass, p.top_p)) + 1]
        ids, values = ids[keep], values[keep]
    if p.min_p > 0.0:
        keep = values >= values.max() + math.log(p.min_p)
        ids, values = ids[keep], values[keep]
    weights = np.exp((values - values.max()) / p.temperature)
    weights /= weights.sum()
    return {int(t): float(w) for t, w in zip(ids, weights, strict=True)}


def chi_square_fits(observed: Counter[int], expected: dict[int, float], draws: int) -> bool:
    """Pearson's test at alpha = 1e-4; tokens expected fewer than 5 times share one bin."""
    bins: list[tuple[float, int]] = []
    rest_expected, rest_observed = 0.0, draws
    for token, prob in expected.items():
        if prob * draws >= 5:
            bins.append((prob * draws, observed[token]))
            rest_observed -= observed[token]
        else:
            rest_expected += prob * draws
    if rest_expected >= 5 or rest_observed:
        bins.append((max(rest_expected, 1e-9), rest_observed))
    statistic = sum((o - e) ** 2 / e for e, o in bins)
    df = max(len(bins) - 1, 1)
    z = 3.719  # the 1e-4 upper quantile of the normal
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3  # Wilson-Hilferty
    return statistic <= critical


@pytest.mark.parametrize("name", [n for n in SETTINGS if n != "temperature alone"])
def test_distribution_of_draws_matches_the_chains_definition(rows: list[Row], name: str) -> None:
    params = SETTINGS[name]
    draws = 3000
    for row in rows:
        history = history_for(row)
        expected = expected_distribution(row, params, history)
        observed: Counter[int] = Counter()
        for seed in range(draws):
            chain = primed(replace(params, seed=seed), row.shape[0], history)
            observed[chain.sample_row(row)] += 1
            chain.free()
        assert set(observed) <= set(expected), "drew a token the chain cannot keep"
        assert chi_square_fits(observed, expected, draws)


def test_a_wrong_distribution_fails_the_chi_square_test(rows: list[Row]) -> None:
    """The test above can fail: the same draws against the chain without its penalties."""
    params = SETTINGS["min-p, penalties both ways"]
    row = rows[1]
    history = history_for(row)
    unpenalized = expected_distribution(
        row,
        replace(params, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0),
        history,
    )
    observed: Counter[int] = Counter()
    for seed in range(3000):
        chain = primed(replace(params, seed=seed), row.shape[0], history)
        observed[chain.sample_row(row)] += 1
        chain.free()
    assert not chi_square_fits(observed, unpenalized, 3000)


def test_same_seed_same_tokens_other_seed_other_tokens(rows: list[Row]) -> None:
    params = SETTINGS["pane default"]
    row = rows[1]
    runs = []
    for seed in (7, 7, 8):
        chain = SamplerChain(replace(params, seed=seed), row.shape[0])
        runs.append([chain.sample_row(row) for _ in range(60)])
        chain.free()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_clone_continues_with_the_same_history_and_random_state(rows: list[Row]) -> None:
    params = replace(SETTINGS["min-p, penalties both ways"], seed=99)
    row = rows[0]
    chain = primed(params, row.shape[0], history_for(row))
    for _ in range(5):
        chain.sample_row(row)
    twin = chain.clone()
    assert [chain.sample_row(row) for _ in range(40)] == [twin.sample_row(row) for _ in range(40)]
    chain.reset()
    twin.reset()
    assert [chain.sample_row(row) for _ in range(10)] == [twin.sample_row(row) for _ in range(10)]


def test_penalties_move_greedy_off_a_repeated_token(rows: list[Row]) -> None:
    row = rows[0]
    best, second = (int(t) for t in np.argsort(row)[::-1][:2])
    plain = SamplerChain(SamplingParams(temperature=0.0), row.shape[0])
    assert plain.sample_row(row) == best
    penalty = float(row[best] / row[second]) * 1.01  # just enough to drop below the second
    assert row[second] > 0 and penalty > 1
    chain = primed(SamplingParams(temperature=0.0, repeat_penalty=penalty), row.shape[0], [best])
    assert chain.sample_row(row) == second
    # A negative presence penalty lifts a token from the history to the top.
    low = int(np.argsort(row)[::-1][30])
    lifted = SamplingParams(temperature=0.0, presence_penalty=-(float(row[best] - row[low]) + 1))
    assert primed(lifted, row.shape[0], [low]).sample_row(row) == low


@pytest.mark.parametrize(
    "row",
    [
        np.zeros(1000, dtype=np.float32),
        np.arange(50, dtype=np.float32),
        np.full(300_000, -np.inf, dtype=np.float32),
        np.random.default_rng(3).standard_normal(262_144).astype(np.float32) * 4,
    ],
    ids=["all equal", "smaller than k", "all -inf", "random"],
)
def test_top_k_ids_are_the_k_largest(row: Row) -> None:
    for k in (1, 40, 64, 300):
        ids = top_k_ids(row, k)
        want = min(k, row.shape[0])
        assert ids.shape[0] == want and len(set(ids.tolist())) == want
        kth = np.sort(row)[::-1][want - 1]
        assert (row[ids] >= kth).all()
