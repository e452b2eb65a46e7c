"""Batched decoding on the real model: isolation, fork, rewind, splitting, scheduling."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core import BatchedExecutor, DecodeResult, ForkPendingTokensError, SamplingParams

GREEDY = SamplingParams(temperature=0.0)
Make = Callable[..., BatchedExecutor]


def tokens_of(executor: BatchedExecutor, text: str) -> list[int]:
    return executor.model.tokenize(text, add_special=True)


def run_pair(
    make: Make, first: list[int], second: list[int], steps: int
) -> tuple[list[np.ndarray], list[int]]:
    """Decode two conversations together greedily; return the first one's logits and tokens."""
    executor = make()
    a, b = executor.create(GREEDY), executor.create(GREEDY)
    a.prompt(first)
    b.prompt(second)
    logits: list[np.ndarray] = []
    tokens: list[int] = []
    for _ in range(steps):
        assert executor.infer_sync() is DecodeResult.OK
        logits.append(a.logits())
        token = a.sample()
        tokens.append(token)
        a.prompt([token])
        b.prompt([b.sample()])
    return logits, tokens


def test_two_conversations_in_one_batch_are_isolated(make_executor: Make) -> None:
    probe = make_executor()
    first = tokens_of(probe, "The three primary colours are")
    b_text = tokens_of(probe, "Once upon a time, in a land far")
    c_text = tokens_of(probe, "def fibonacci(n): return n if n")
    n = min(len(b_text), len(c_text))
    b_text, c_text = b_text[:n], c_text[:n]
    assert b_text != c_text
    logits_b, tokens_b = run_pair(make_executor, first, b_text, steps=8)
    logits_c, tokens_c = run_pair(make_executor, first, c_text, steps=8)
    assert tokens_b == tokens_c
    for with_b, with_c in zip(logits_b, logits_c, strict=True):
        assert np.array_equal(with_b, with_c)  # bit-identical, not merely close


def test_one_batch_holds_every_conversation(make_executor: Make) -> None:
    executor = make_executor()
    convs = [executor.create(GREEDY) for _ in range(3)]
    for i, conv in enumerate(convs):
        conv.prompt(f"Question {i}: what is {i} plus {i}?")
    queued = executor.batched_token_count
    assert executor.infer_sync() is DecodeResult.OK
    assert executor.stats.decode_calls == 1
    assert executor.stats.last_batch_tokens == queued
    assert all(c.requires_sampling for c in convs)
    assert executor.batched_token_count == 0


def test_fork_shares_prefix_and_continues_like_parent(make_executor: Make) -> None:
    executor = make_executor()
    parent = executor.create(GREEDY)
    parent.prompt("The capital of France is")
    assert executor.infer_sync() is DecodeResult.OK
    decoded_before = executor.stats.tokens_decoded
    child = parent.fork()
    assert executor.batched_token_count == 0
    assert not child.requires_inference
    assert child.requires_sampling and child.tokens == parent.tokens
    assert executor.seq_pos_max(child.sequence_id) == parent.token_count - 1
    for _ in range(6):
        assert np.array_equal(parent.logits(), child.logits())
        p_tok, c_tok = parent.sample(), child.sample()
        assert p_tok == c_tok
        parent.prompt([p_tok])
        child.prompt([c_tok])
        assert executor.infer_sync() is DecodeResult.OK
    # The fork decoded only its own new tokens, never the shared history.
    assert executor.stats.tokens_decoded - decoded_before == 12


def test_fork_of_a_fork_works(make_executor: Make) -> None:
    executor = make_executor()
    root = executor.create(GREEDY)
    root.prompt("One, two, three,")
    executor.infer_sync()
    grandchild = root.fork().fork()
    assert grandchild.tokens == root.tokens
    assert grandchild.sample() == root.sample()


def test_fork_with_queued_tokens_raises(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    conv.prompt("not decoded yet")
    with pytest.raises(ForkPendingTokensError):
        conv.fork()


def test_rewind_then_same_tokens_gives_same_logits(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create(GREEDY)
    conv.prompt("Water boils at a temperature of")
    executor.infer_sync()
    tail = []
    for _ in range(4):
        token = conv.sample()
        tail.append(token)
        conv.prompt([token])
        executor.infer_sync()
    expected = conv.logits()
    conv.rewind(4)
    assert conv.token_count == len(conv.tokens)
    assert executor.seq_pos_max(conv.sequence_id) == conv.token_count - 1
    assert not conv.requires_sampling
    for token in tail:  # same tokens, same batch shape (one token per decode)
        conv.prompt([token])
        executor.infer_sync()
    assert np.array_equal(conv.logits(), expected)


def test_long_prompt_is_split_while_others_keep_generating(make_executor: Make) -> None:
    executor = make_executor(n_batch=64, n_ubatch=64, n_ctx=2048)
    talker = executor.create(GREEDY)
    talker.prompt("Count with me: one, two,")
    executor.infer_sync()
    reader = executor.create(GREEDY)
    long_prompt = executor.model.tokenize("The quick brown fox jumps over the lazy dog. " * 30)
    assert len(long_prompt) > 3 * 64
    reader.prompt(long_prompt)
    generated = 0
    while reader.requires_inference:
        talker.prompt([talker.sample()])
        assert executor.infer_sync() is DecodeResult.OK
        assert executor.stats.last_batch_tokens <= 64
        assert talker.requires_sampling  # its token went in every single batch
        generated += 1
    assert generated >= len(long_prompt) // 63
    assert reader.token_count == len(long_prompt)
    assert reader.requires_sampling


def test_infer_with_nothing_queued_is_a_no_op(make_executor: Make) -> None:
    executor = make_executor()
    executor.create()
    assert executor.infer_sync() is DecodeResult.OK
    assert executor.stats.decode_calls == 0


async def test_infer_is_awaitable(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create(GREEDY)
    conv.prompt("Hello")
    assert await executor.infer() is DecodeResult.OK
    assert conv.requires_sampling


def test_deprecated_executor_prompt_warns_and_creates(make_executor: Make) -> None:
    executor = make_executor()
    with pytest.warns(DeprecationWarning):
        conv = executor.prompt("Hello there")
    assert conv.requires_inference


def generate(make: Make, sampling: SamplingParams, prompt: str, n: int) -> list[int]:
    """Sample n tokens from a fresh executor, one decode per token."""
    executor = make()
    conv = executor.create(sampling)
    conv.prompt(prompt)
    out = []
    for _ in range(n):
        executor.infer_sync()
        token = conv.sample()
        out.append(token)
        conv.prompt([token])
    return out


def test_seeded_sampling_is_reproducible_and_seeds_differ(make_executor: Make) -> None:
    def run(seed: int) -> list[int]:
        params = SamplingParams(temperature=1.2, top_k=0, min_p=0.0, seed=seed)
        return generate(make_executor, params, "Once upon a time", 12)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_repetition_penalty_changes_greedy_choices(make_executor: Make) -> None:
    def run(penalty: float) -> list[int]:
        params = SamplingParams(temperature=0, repeat_penalty=penalty)
        return generate(make_executor, params, "la la la la la la la la", 8)

    assert run(1.0) != run(1.8)
