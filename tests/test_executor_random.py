"""Random operation sequences over the real executor (hypothesis), checking after every step
what must always hold: each live conversation's KV extent is exactly its tokens, sequence ids
are unique and in range, a failed or cancelled decode changes nothing, and each misuse raises
its documented error and nothing else. LLamaSharp's batched executor shipped bugs only such
sequences find (ids leaking past ``n_seq_max``; a disposed conversation's queued tokens decoded
under a reused id).

CI runs a bounded profile. The long one is one command (its result is in docs/RELIABILITY.md):
``PANECHAT_FUZZ_EXAMPLES=10000 pytest tests/test_executor_random.py``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from core import (
    AlreadyPromptedError,
    BatchedExecutor,
    CancellationToken,
    ContextParams,
    Conversation,
    ConversationDisposedError,
    DecodeResult,
    ForkPendingTokensError,
    KvShiftError,
    LlamaWeights,
    NoLogitsError,
    RequiresInferenceError,
    RewindError,
    SamplingParams,
    SequencePoolExhaustedError,
    StateError,
    resolve_model_path,
)

EXAMPLES = int(os.environ.get("PANECHAT_FUZZ_EXAMPLES", "25"))
STEPS = int(os.environ.get("PANECHAT_FUZZ_STEPS", "30"))
#: Small on purpose: a few long prompts exhaust the cache, and prompts exceed one batch.
PARAMS = ContextParams(n_ctx=256, n_batch=32, n_ubatch=32, n_seq_max=4, max_frame_stretch=0)
GREEDY = SamplingParams(temperature=0.0)
SAMPLED = SamplingParams(temperature=0.8, seed=3)

_weights: list[LlamaWeights] = []


def weights() -> LlamaWeights:
    """One load for every example (the session fixture cannot reach a state machine)."""
    if not _weights:
        _weights.append(LlamaWeights.load(resolve_model_path(None)))
    return _weights[0]


class ExecutorMachine(RuleBasedStateMachine):
    conversations = Bundle("conversations")

    def __init__(self) -> None:
        super().__init__()
        self.executor = BatchedExecutor(weights(), PARAMS)
        self.vocab = self.executor.model.n_vocab

    def teardown(self) -> None:
        self.executor.close()

    def live(self) -> tuple[Conversation, ...]:
        return self.executor.conversations

    # -- rules ----------------------------------------------------------------------------

    @rule(target=conversations, sampled=st.booleans())
    def create(self, sampled: bool) -> object:
        full = len(self.live()) == PARAMS.n_seq_max
        try:
            conv = self.executor.create(SAMPLED if sampled else GREEDY)
        except SequencePoolExhaustedError:
            assert full
            return multiple()
        assert not full
        return conv

    @rule(conv=conversations, length=st.integers(1, 80), seed=st.integers(0, 2**16))
    def prompt(self, conv: Conversation, length: int, seed: int) -> None:
        tokens = [(seed * 7919 + i * 104729) % self.vocab for i in range(length)]
        if conv.is_disposed:
            with pytest.raises(ConversationDisposedError):
                conv.prompt(tokens)
        elif conv.pending_count:
            with pytest.raises(AlreadyPromptedError):
                conv.prompt(tokens)
        else:
            assert conv.prompt(tokens) == length

    @rule(cancelled=st.booleans())
    def infer(self, cancelled: bool) -> None:
        before = {c: c.tokens + c.pending_tokens for c in self.live()}
        token = CancellationToken()
        if cancelled:
            token.cancel()
        result = self.executor.infer_sync(token)
        assert result in (DecodeResult.OK, DecodeResult.NO_KV_SLOT, DecodeResult.COMPUTE_ABORTED)
        if not result.ok:  # a failed or cancelled decode leaves every conversation as it was
            # (one waiting to sample may queue its last token again: its logits were lost)
            assert {c: c.tokens + c.pending_tokens for c in self.live()} == before
            if result is DecodeResult.NO_KV_SLOT:  # make room, as the engine would
                biggest = max(self.live(), key=lambda c: c.token_count + c.pending_count)
                biggest.dispose()

    @rule(conv=conversations, feed=st.booleans())
    def sample(self, conv: Conversation, feed: bool) -> None:
        if conv.is_disposed:
            with pytest.raises(ConversationDisposedError):
                conv.sample()
        elif not conv.requires_sampling:
            with pytest.raises((NoLogitsError, RequiresInferenceError)):
                conv.sample()
        else:
            token = conv.sample()
            assert 0 <= token < self.vocab
            if feed:
                conv.prompt([token])

    @rule(target=conversations, conv=conversations)
    def fork(self, conv: Conversation) -> object:
        if conv.is_disposed:
            with pytest.raises(ConversationDisposedError):
                conv.fork()
            return multiple()
        if conv.pending_count:
            with pytest.raises(ForkPendingTokensError):
                conv.fork()
            return multiple()
        full = len(self.live()) == PARAMS.n_seq_max
        try:
            child = conv.fork()
        except SequencePoolExhaustedError:
            assert full
            return multiple()
        assert child.tokens == conv.tokens
        assert child.requires_sampling == conv.requires_sampling
        return child

    @rule(conv=conversations, n=st.integers(0, 100))
    def rewind(self, conv: Conversation, n: int) -> None:
        if conv.is_disposed:
            with pytest.raises(ConversationDisposedError):
                conv.rewind(n)
        elif conv.pending_count:
            with pytest.raises(RequiresInferenceError):
                conv.rewind(n)
        elif n > conv.token_count:
            with pytest.raises(RewindError):
                conv.rewind(n)
        else:
            kept = conv.tokens[: conv.token_count - n]
            conv.rewind(n)
            assert conv.tokens == kept

    @rule(conv=conversations, start=st.integers(0, 60), count=st.integers(0, 60))
    def remove_tokens(self, conv: Conversation, start: int, count: int) -> None:
        """A context shift: drop a span and close the gap (shifting, or queuing the tail)."""
        if conv.is_disposed:
            with pytest.raises(ConversationDisposedError):
                conv.remove_tokens(start, count)
        elif conv.pending_count:
            with pytest.raises(RequiresInferenceError):
                conv.remove_tokens(start, count)
        elif start + count > conv.token_count:
            with pytest.raises(KvShiftError):
                conv.remove_tokens(start, count)
        else:
            expected = conv.tokens[:start] + conv.tokens[start + count :]
            conv.remove_tokens(start, count)
            assert conv.tokens + conv.pending_tokens == expected

    @rule(target=conversations, conv=conversations)
    def save_and_load(self, conv: Conversation) -> object:
        if conv.is_disposed or conv.pending_count:
            with pytest.raises((ConversationDisposedError, RequiresInferenceError)):
                conv.save()
            return multiple()
        state = conv.save()
        if len(self.live()) == PARAMS.n_seq_max:
            return multiple()
        try:
            loaded = self.executor.load(state, GREEDY)
        except StateError:  # documented: too few free cells for its tokens
            assert self.executor.tokens_in_kv + len(state.tokens) > PARAMS.n_ctx // 2
            return multiple()
        assert loaded.tokens == conv.tokens and not loaded.requires_sampling
        return loaded

    @rule(conv=consumes(conversations))
    def dispose(self, conv: Conversation) -> None:
        conv.dispose()
        conv.dispose()  # idempotent
        assert conv not in self.live()

    @precondition(lambda self: len(self.live()) > 0)
    @rule()
    def exhaust_the_cache(self) -> None:
        """Prompt every idle conversation with a long prompt, then decode until the cache is
        full or everything fits: NO_KV_SLOT must change nothing (checked in infer)."""
        for conv in self.live():
            if not conv.pending_count:
                conv.prompt([(i * 31) % self.vocab for i in range(90)])
        for _ in range(12):
            self.infer(cancelled=False)
            if not any(c.requires_inference for c in self.live()):
                break

    # -- what always holds ----------------------------------------------------------------

    @invariant()
    def sequence_ids_are_unique_and_in_range(self) -> None:
        ids = [c.sequence_id for c in self.live()]
        assert len(ids) == len(set(ids)) and all(0 <= i < PARAMS.n_seq_max for i in ids)
        assert self.executor.free_sequences == PARAMS.n_seq_max - len(ids)

    @invariant()
    def each_kv_extent_is_exactly_its_tokens(self) -> None:
        """A disposed conversation's cells (or queued tokens, decoded under a reused id)
        would show here as cells beyond a live conversation's tokens."""
        for conv in self.live():
            assert self.executor.seq_pos_max(conv.sequence_id) == conv.token_count - 1, conv


ExecutorMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=EXAMPLES <= 25,  # CI: the same sequences every run; long runs explore
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure prints unshrunk: fast
)
TestExecutorRandomly = ExecutorMachine.TestCase
