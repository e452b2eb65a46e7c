"""Conversation life cycle on the real model: errors, dispose, pool, save/load, KV limits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core import (
    AlreadyPromptedError,
    BatchedExecutor,
    CancellationToken,
    ContextParams,
    ConversationDisposedError,
    ConversationState,
    DecodeResult,
    ExecutorDisposedError,
    InvalidParamsError,
    KvShiftError,
    NoLogitsError,
    PanechatError,
    RequiresInferenceError,
    RewindError,
    SamplingParams,
    SequencePoolExhaustedError,
    StateError,
)

GREEDY = SamplingParams(temperature=0.0)
Make = Callable[..., BatchedExecutor]


# -- errors ------------------------------------------------------------------------------


def test_sampling_before_inference_raises(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    with pytest.raises(NoLogitsError):
        conv.sample()
    conv.prompt("Hello")
    with pytest.raises(RequiresInferenceError):
        conv.sample()


def test_logits_expire_after_the_next_infer(make_executor: Make) -> None:
    executor = make_executor()
    a, b = executor.create(), executor.create()
    a.prompt("Hello")
    executor.infer_sync()
    b.prompt("World")
    executor.infer_sync()
    assert not a.requires_sampling
    with pytest.raises(NoLogitsError):
        a.sample()


def test_prompting_twice_before_inference_raises(make_executor: Make) -> None:
    conv = make_executor().create()
    conv.prompt("first")
    with pytest.raises(AlreadyPromptedError):
        conv.prompt("second")


def test_every_use_after_dispose_raises(make_executor: Make) -> None:
    conv = make_executor().create()
    conv.dispose()
    conv.dispose()  # idempotent
    for use in (
        lambda: conv.prompt("x"),
        conv.sample,
        conv.fork,
        lambda: conv.rewind(0),
        conv.save,
        conv.logits,
    ):
        with pytest.raises(ConversationDisposedError):
            use()


def test_closed_executor_raises(weights: object) -> None:
    executor = BatchedExecutor(weights, ContextParams(n_ctx=256, n_batch=32, n_seq_max=2))  # type: ignore[arg-type]
    conv = executor.create()
    with executor:
        pass
    assert executor.is_disposed and conv.is_disposed
    with pytest.raises(ExecutorDisposedError):
        executor.create()
    with pytest.raises(ExecutorDisposedError):
        executor.infer_sync()


def test_bad_prompts_and_params_raise(make_executor: Make) -> None:
    conv = make_executor().create()
    with pytest.raises(InvalidParamsError):
        conv.prompt([])
    with pytest.raises(InvalidParamsError):
        conv.prompt([10**9])
    with pytest.raises(InvalidParamsError):
        ContextParams(n_batch=8, n_ubatch=16)
    with pytest.raises(InvalidParamsError):
        ContextParams(n_batch=2, n_seq_max=4)
    with pytest.raises(InvalidParamsError):
        SamplingParams(top_p=0.0)


def test_rewind_past_the_start_raises(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    conv.prompt("four or five tokens")
    executor.infer_sync()
    with pytest.raises(RewindError):
        conv.rewind(conv.token_count + 1)


def test_all_specific_errors_share_one_base() -> None:
    for cls in (
        AlreadyPromptedError,
        ConversationDisposedError,
        ExecutorDisposedError,
        NoLogitsError,
        RequiresInferenceError,
        RewindError,
        SequencePoolExhaustedError,
        StateError,
        KvShiftError,
    ):
        assert issubclass(cls, PanechatError)


# -- dispose and the sequence pool --------------------------------------------------------


def test_dispose_frees_the_kv_cells(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    seq = conv.sequence_id
    conv.prompt("Some tokens to store in the cache")
    executor.infer_sync()
    assert executor.seq_pos_max(seq) == conv.token_count - 1
    conv.dispose()
    assert executor.seq_pos_max(seq) == -1


def test_pool_is_bounded_and_reuses_ids(make_executor: Make) -> None:
    executor = make_executor(n_seq_max=4)
    convs = [executor.create() for _ in range(4)]
    with pytest.raises(SequencePoolExhaustedError):
        executor.create()
    convs[2].dispose()
    assert executor.create().sequence_id == 2


def test_thousand_create_dispose_cycles_never_fail(make_executor: Make) -> None:
    executor = make_executor(n_seq_max=4, n_ctx=512)
    bos = executor.model.bos_token
    for cycle in range(1000):
        conv = executor.create()
        assert 0 <= conv.sequence_id < 4
        conv.prompt([bos, 100 + cycle % 50])
        if cycle % 10 == 0:
            assert executor.infer_sync() is DecodeResult.OK
        conv.dispose()
    assert executor.free_sequences == 4
    assert executor.batched_token_count == 0


def test_dispose_purges_queued_tokens_before_the_id_is_reused(make_executor: Make) -> None:
    executor = make_executor(n_seq_max=4)
    doomed = executor.create()
    seq = doomed.sequence_id
    doomed.prompt("These tokens must never be decoded under the next owner of this id")
    doomed.dispose()
    heir = executor.create()
    assert heir.sequence_id == seq
    n = heir.prompt("Fresh start")
    assert executor.batched_token_count == n
    assert executor.infer_sync() is DecodeResult.OK
    assert executor.stats.last_batch_tokens == n
    assert executor.seq_pos_max(seq) == n - 1


# -- save / load --------------------------------------------------------------------------


def test_save_and_load_round_trip(make_executor: Make, tmp_path: Path) -> None:
    executor = make_executor()
    original = executor.create(GREEDY)
    original.prompt("My favourite animal is the")
    executor.infer_sync()
    state = original.save(tmp_path / "conv.bin")
    token = original.sample()
    original.dispose()

    restored = executor.load(tmp_path / "conv.bin", GREEDY)
    assert restored.tokens == state.tokens
    assert executor.seq_pos_max(restored.sequence_id) == len(state.tokens) - 1
    # Continuing the restored one equals continuing a fresh decode of the same text.
    reference = executor.create(GREEDY)
    reference.prompt(list(state.tokens[:-1]))
    executor.infer_sync()
    reference.prompt([state.tokens[-1]])
    restored.rewind(1)
    restored.prompt([state.tokens[-1]])
    executor.infer_sync()
    assert np.array_equal(restored.logits(), reference.logits())
    assert restored.sample() == token
    assert ConversationState.from_bytes(state.to_bytes()) == state


def test_loading_a_corrupt_or_foreign_state_raises(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    conv.prompt("Short")
    executor.infer_sync()
    state = conv.save()
    with pytest.raises(StateError):
        ConversationState.from_bytes(b"garbage")
    with pytest.raises(StateError):
        ConversationState.from_bytes(state.to_bytes()[:-10])
    foreign = ConversationState(state.tokens, state.kv_data, "other-model:1:2:3")
    with pytest.raises(StateError):
        executor.load(foreign)
    broken = ConversationState(state.tokens, b"\x00" * 16, state.fingerprint)
    with pytest.raises(StateError):
        executor.load(broken)
    assert executor.free_sequences == 3  # a failed load gives its sequence id back


def test_save_with_queued_tokens_raises(make_executor: Make) -> None:
    conv = make_executor().create()
    conv.prompt("queued")
    with pytest.raises(RequiresInferenceError):
        conv.save()


# -- KV limits, cancellation, context shift -----------------------------------------------


def test_context_too_small_gives_no_kv_slot_then_retry_after_dispose(make_executor: Make) -> None:
    executor = make_executor(n_ctx=256, n_batch=256, n_ubatch=256, n_seq_max=2)
    hog = executor.create()
    hog.prompt(executor.model.tokenize("word " * 200))
    assert executor.infer_sync() is DecodeResult.OK
    late = executor.create()
    n_late = late.prompt(executor.model.tokenize("other " * 100))
    assert executor.infer_sync() is DecodeResult.NO_KV_SLOT
    assert late.requires_inference and late.token_count == 0  # nothing changed
    assert executor.seq_pos_max(late.sequence_id) == -1
    hog.dispose()
    assert executor.infer_sync() is DecodeResult.OK
    assert late.requires_sampling and late.token_count == n_late


def test_cancellation_aborts_a_long_prefill_and_leaves_a_usable_state(make_executor: Make) -> None:
    executor = make_executor(n_ctx=2048, n_batch=512, n_ubatch=512)
    waiting = executor.create(GREEDY)
    waiting.prompt("Hello")
    executor.infer_sync()
    long = executor.create(GREEDY)
    long.prompt(executor.model.tokenize("A long document line. " * 100)[:500])
    cancel = CancellationToken()
    timer = threading.Timer(0.01, cancel.cancel)
    timer.start()
    result = executor.infer_sync(cancel)
    timer.cancel()
    assert result is DecodeResult.COMPUTE_ABORTED
    assert long.token_count == 0 and long.pending_count == 500
    assert executor.seq_pos_max(long.sequence_id) == -1
    # The conversation that was waiting to sample lost nothing: its last token is re-queued.
    assert waiting.requires_inference and waiting.token_count == len(waiting.tokens)
    assert executor.infer_sync(CancellationToken()) is DecodeResult.OK
    assert waiting.requires_sampling
    waiting.sample()
    # With a conversation generating again, the prompt goes on in budgeted chunks.
    while long.requires_inference:
        assert executor.infer_sync() is DecodeResult.OK
    assert long.requires_sampling and long.token_count == 500


def test_already_cancelled_token_skips_the_decode(make_executor: Make) -> None:
    executor = make_executor()
    conv = executor.create()
    conv.prompt("Hello")
    token = CancellationToken()
    token.cancel()
    assert executor.infer_sync(token) is DecodeResult.COMPUTE_ABORTED
    assert conv.requires_inference and executor.stats.decode_calls == 0


def test_shift_left_drops_old_tokens_and_keeps_going(make_executor: Make) -> None:
    executor = make_executor()
    assert executor.can_shift
    conv = executor.create(GREEDY)
    conv.prompt("System: be brief. " + "filler words here " * 20)
    executor.infer_sync()
    before = conv.token_count
    assert conv.kv.remove(5, 40) is True  # shifted in place, nothing re-decoded
    assert conv.token_count == before - 40
    assert executor.seq_pos_max(conv.sequence_id) == conv.token_count - 1
    conv.prompt(" and")
    assert executor.infer_sync() is DecodeResult.OK
    conv.sample()


def test_shift_of_shared_cells_redecodes_instead(make_executor: Make) -> None:
    executor = make_executor()
    parent = executor.create(GREEDY)
    parent.prompt("shared history " * 10)
    executor.infer_sync()
    child = parent.fork()
    n = child.token_count
    assert child.kv.remove(2, 5) is False  # cells after the gap are shared with the parent
    assert child.token_count == 2 and child.pending_count == n - 7
    assert executor.infer_sync() is DecodeResult.OK
    assert child.token_count == n - 5
    assert executor.seq_pos_max(parent.sequence_id) == n - 1  # the parent is untouched
    with pytest.raises(KvShiftError):
        child.kv.remove(0, 10**6)
