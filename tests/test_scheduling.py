"""The greedy fast path and the prefill budget, on the real model (the budget's arithmetic
also on its own)."""

from __future__ import annotations

from collections.abc import Callable

import llama_cpp
import pytest

from core import (
    BatchedExecutor,
    ContextParams,
    Conversation,
    DecodeResult,
    InvalidParamsError,
    SamplingParams,
)
from core.executor.prefill_budget import PrefillBudget

GREEDY = SamplingParams(temperature=0.0)
Make = Callable[..., BatchedExecutor]


def test_greedy_fast_path_picks_what_the_native_greedy_sampler_picks(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create(GREEDY)
    native = llama_cpp.llama_sampler_init_greedy()  # what the fast path stands in for
    try:
        conv.prompt("The capital of France is")
        for _ in range(12):
            assert executor.infer_sync() is DecodeResult.OK
            # The batch holds one conversation, so its row is the batch's last one (-1).
            expected = llama_cpp.llama_sampler_sample(native, executor.context, -1)
            assert int(conv.logits().argmax()) == expected
            token = conv.sample()
            assert token == expected
            conv.prompt([token])
    finally:
        llama_cpp.llama_sampler_free(native)


def start_generators(executor: BatchedExecutor, count: int) -> list[Conversation]:
    convs = [executor.create(GREEDY) for _ in range(count)]
    for i, conv in enumerate(convs):
        conv.prompt(f"Story {i}: once upon a time")
    assert executor.infer_sync() is DecodeResult.OK
    return convs


def step(executor: BatchedExecutor, convs: list[Conversation]) -> None:
    for conv in convs:
        conv.prompt([conv.sample()])
    assert executor.infer_sync() is DecodeResult.OK


def test_a_long_prompt_is_fed_in_small_chunks_while_others_generate(make_executor: Make) -> None:
    executor = make_executor(n_batch=256, n_ubatch=256)
    generators = start_generators(executor, 2)
    for _ in range(3):  # the budget learns what a frame of two generators costs
        step(executor, generators)
    budget = executor.prefill_budget
    assert budget.prompt_token_seconds is not None  # learned from the frames above
    # The chunks follow from costs the test chooses: measured ones vary with the machine's
    # load (a frame that waited for a core looks expensive).
    budget.reset()
    budget.observe(2, 0, 0.030)
    budget.observe(3, 0, 0.036)
    budget.observe(2, 8, 0.038)  # allows 15 prompt tokens beside two generators
    budget.freeze()
    long = executor.create(GREEDY)
    long.prompt(executor.model.tokenize("A line of an ordinary document. " * 40)[:240])
    chunks = []
    while long.requires_inference:
        before = long.pending_count
        step(executor, generators)
        chunks.append(before - long.pending_count)
        assert all(g.requires_sampling for g in generators)  # nobody skipped a frame
    assert long.requires_sampling and long.token_count == 240
    assert max(chunks) == 15 and len(chunks) >= 240 // 15


def test_with_the_cap_off_a_prompt_fills_whole_batches(make_executor: Make) -> None:
    executor = make_executor(n_batch=256, n_ubatch=256, max_frame_stretch=0)
    generators = start_generators(executor, 2)
    long = executor.create(GREEDY)
    long.prompt(executor.model.tokenize("A line of an ordinary document. " * 40)[:240])
    step(executor, generators)
    assert long.requires_sampling and long.token_count == 240


def test_a_prompt_alone_fills_whole_batches(make_executor: Make) -> None:
    executor = make_executor(n_batch=256, n_ubatch=256)
    conv = executor.create(GREEDY)
    conv.prompt(executor.model.tokenize("Words and more words. " * 60)[:300])
    assert executor.infer_sync() is DecodeResult.OK
    assert conv.token_count == 256 and conv.pending_count == 44


def test_budget_arithmetic() -> None:
    budget = PrefillBudget(max_stretch=1.5, min_chunk=8)
    assert budget.limit(0, 500) == 500  # nobody generating: whole batches
    assert budget.limit(4, 500) == 8  # nothing learned yet: a small chunk
    budget.observe(4, 0, 0.030)  # four generators: 30 ms
    budget.observe(4, 8, 0.038)  # plus 8 prompt tokens: 1 ms each
    assert budget.limit(4, 500) == 15  # (1.5 - 1) * 30 ms / 1 ms
    assert budget.limit(4, 10) == 10  # never more than the batch has room for
    assert budget.limit(8, 500) == 30  # unmeasured count: scaled from the nearest, 60 ms
    assert PrefillBudget(max_stretch=None).limit(4, 500) == 500


def test_a_completing_chunk_leaves_room_for_its_logits_row() -> None:
    budget = PrefillBudget(max_stretch=1.5, min_chunk=8)
    assert budget.output_reserve(4) == 0  # nothing learned yet
    budget.observe(4, 0, 0.030)
    budget.observe(5, 0, 0.036)  # one more row: 6 ms
    budget.observe(4, 8, 0.038)  # 1 ms per prompt token
    assert budget.output_reserve(4) == 6
    assert budget.output_reserve(0) == 0  # nobody waiting on the frame
    # A frame that ends a prompt: its row's 6 ms are not charged to the prompt tokens.
    budget.observe(4, 10, 0.046, prompt_outputs=1)
    assert budget.limit(4, 500) == 15
    assert PrefillBudget(max_stretch=None).output_reserve(4) == 0


def test_the_frame_that_ends_a_prompt_stays_within_the_cap(make_executor: Make) -> None:
    """With generators streaming, the chunk that completes a prompt is cut short enough to
    leave room for its logits row, and the prompt ends one frame later instead."""
    executor = make_executor(n_batch=256, n_seq_max=5, max_frame_stretch=1.5)
    gens = [executor.create(GREEDY) for _ in range(4)]
    for conv in gens:
        conv.prompt("Once upon a time")
    executor.infer_sync()
    budget = executor.prefill_budget
    budget.reset()  # forget what the frame above taught it, for costs the test chooses
    budget.observe(4, 0, 0.030)
    budget.observe(5, 0, 0.036)
    budget.observe(4, 8, 0.038)  # allows 15 prompt tokens; a logits row costs 6 of them
    budget.freeze()  # keep these costs for the test
    long = executor.create(GREEDY)
    long.prompt(executor.model.tokenize("Words and more words. " * 5)[:12])

    def frame() -> None:
        for conv in gens:
            conv.prompt([conv.sample()])
        assert executor.infer_sync() is DecodeResult.OK

    frame()  # 12 tokens + a row would cost 18 of the 15 allowed: end it next frame instead
    assert long.token_count == 3 and long.pending_count == 9 and not long.requires_sampling
    frame()  # 9 tokens + the row's 6 fit
    assert long.token_count == 12 and long.requires_sampling


@pytest.mark.parametrize("value", [0.5, 1.0, -1.0, float("nan")])
def test_max_frame_stretch_must_be_off_or_above_one(value: float) -> None:
    with pytest.raises(InvalidParamsError, match="max_frame_stretch"):
        ContextParams(max_frame_stretch=value)
