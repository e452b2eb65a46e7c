"""Conversations on one system prompt decode it once and then share its KV cells."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core import BatchedExecutor, DecodeResult, PrefillInFlight, SamplingParams, SharedPrefixes

GREEDY = SamplingParams(temperature=0.0)
Make = Callable[..., BatchedExecutor]


def prefix_of(executor: BatchedExecutor, n: int = 300) -> list[int]:
    text = "You are a careful assistant who answers in full sentences. " * 40
    return executor.model.tokenize(text, add_special=True)[:n]


def test_the_prefix_is_decoded_once_and_forked(make_executor: Make) -> None:
    executor = make_executor(n_ctx=2048, n_batch=256, n_ubatch=256)
    prefixes = SharedPrefixes(executor)
    prefix = prefix_of(executor)
    first = prefixes.open(prefix, GREEDY)
    with pytest.raises(PrefillInFlight):
        prefixes.open(prefix, GREEDY)  # mid-prefill: wait rather than decode it twice
    while first.requires_inference:  # 300 tokens, two batches
        assert executor.infer_sync() is DecodeResult.OK
        if first.requires_inference:
            with pytest.raises(PrefillInFlight):
                prefixes.open(prefix, GREEDY)
    decoded = executor.stats.tokens_decoded
    second, third = prefixes.open(prefix, GREEDY), prefixes.open(prefix, GREEDY)
    assert executor.stats.tokens_decoded == decoded  # nothing decoded for them
    assert second.token_count == third.token_count == len(prefix)
    assert (prefixes.prefilled, prefixes.shared) == (1, 2)
    # All three continue identically (greedy) from the shared cells.
    for conv in (first, second, third):
        conv.prompt(executor.model.tokenize(" Question: what is two plus two?"))
    assert executor.infer_sync() is DecodeResult.OK
    logits = [c.logits() for c in (first, second, third)]
    assert all(int(x.argmax()) == int(logits[0].argmax()) for x in logits)
    assert np.allclose(logits[0], logits[1], atol=1e-2)


def test_a_holder_that_moved_on_is_forked_and_rewound(make_executor: Make) -> None:
    executor = make_executor(n_ctx=2048, n_batch=256, n_ubatch=256)
    prefixes = SharedPrefixes(executor)
    prefix = prefix_of(executor, 100)
    donor = prefixes.open(prefix, GREEDY)
    assert executor.infer_sync() is DecodeResult.OK
    donor.prompt(executor.model.tokenize(" Hello there."))
    assert executor.infer_sync() is DecodeResult.OK
    donor_tokens = donor.tokens
    child = prefixes.open(prefix, GREEDY)
    assert child.tokens == tuple(prefix) and donor.tokens == donor_tokens
    # A holder whose history no longer starts with the prefix is never used.
    donor.rewind(donor.token_count - 10)
    child.dispose()
    other = prefixes.open(prefix, GREEDY)
    assert other.pending_count == len(prefix)  # prefilled afresh
