"""The batched executor: one llama.cpp context, many conversations, one decode per step."""

from __future__ import annotations

import asyncio
import ctypes
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from core.errors import (
    ExecutorBusyError,
    ExecutorDisposedError,
    InvalidParamsError,
    StateError,
)
from core.executor.adaptive_threads import AdaptiveThreads, OutsideLoad
from core.executor.cancellation import CancellationToken, native_abort_callback
from core.executor.context_budget import available_memory, check_context
from core.executor.conversation import Conversation
from core.executor.conversation_state import ConversationState
from core.executor.decode_result import DecodeResult
from core.executor.native_batch import NativeBatch
from core.executor.params import ContextParams
from core.executor.prefill_budget import PrefillBudget
from core.executor.sequence_pool import SequenceIdPool
from core.models.weights import LlamaWeights
from core.sampling.sampling import SamplerChain, SamplingParams

_FLASH = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
#: Failures after which llama.cpp has already reset its output buffer (old logits are gone).
_LOGITS_LOST = {
    DecodeResult.COMPUTE_ABORTED,
    DecodeResult.ALLOCATION_FAILED,
    DecodeResult.DECODE_FAILED,
}


@dataclass(frozen=True, slots=True)
class PlannedChunk:
    """One conversation's share of the batch being decoded."""

    conversation: Conversation
    count: int  # its queued tokens in this batch
    last_row: int  # the batch row of the chunk's last token
    completes: bool  # the chunk ends its queue: that row's logits are kept for sampling


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one ``infer()`` decodes, and the shape the prefill budget learns frame costs by."""

    chunks: tuple[PlannedChunk, ...] = ()
    generators: int = 0  # conversations decoding their one sampled token
    prompt_tokens: int = 0  # tokens of longer prompts
    prompt_outputs: int = 0  # prompts this batch finishes (each computes a logits row)


@dataclass(slots=True)
class DecodeStats:
    """Counters for benchmarks, status bars and tests (all since the executor was created)."""

    decode_calls: int = 0
    tokens_decoded: int = 0
    decode_seconds: float = 0.0
    last_batch_tokens: int = 0
    last_decode_seconds: float = 0.0
    thread_changes: int = 0  # times the thread count gave way to other processes, or came back


class BatchedExecutor:
    """Owns one llama.cpp context and decodes every conversation's queued tokens together.

    Each :meth:`infer` decodes at most one batch of ``n_batch`` tokens: first the single queued
    token of every generating conversation, then chunks of longer prompts, so one long prompt
    never holds back the others' next token, and while anyone generates the chunks are only as
    big as :class:`PrefillBudget` allows, so it does not slow their frames much either.
    Anything but ``DecodeResult.OK`` leaves every conversation as it was, so the call can simply
    be retried (after disposing one on ``NO_KV_SLOT``). The executor is not thread-safe: drive it
    from one thread or event loop.
    """

    def __init__(
        self,
        weights: LlamaWeights,
        params: ContextParams | None = None,
        *,
        outside_load: OutsideLoad | None = None,
    ) -> None:
        """``outside_load`` is where ``params.adapt_threads`` learns other processes' CPU
        use: /proc/stat by default; tests script it, to control the load they test with."""
        self._weights = weights
        self._params = params = params or ContextParams()
        kv_on_cpu = not (
            weights.gpu_offload_supported() and weights.n_gpu_layers != 0 and params.offload_kqv
        )
        check_context(
            params.n_ctx,
            weights.n_ctx_train,
            weights.kv_shape() if kv_on_cpu else None,
            available_memory() if kv_on_cpu else None,
        )
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = params.n_ctx
        cparams.n_batch = params.n_batch
        cparams.n_ubatch = params.physical_batch
        cparams.n_seq_max = params.n_seq_max
        cparams.n_threads = params.threads
        cparams.n_threads_batch = params.threads_batch
        cparams.kv_unified = params.kv_unified
        cparams.flash_attn_type = _FLASH[params.flash_attention]
        cparams.offload_kqv = params.offload_kqv
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(weights.model, cparams)
        if not ctx:
            raise InvalidParamsError(
                f"llama.cpp could not create a context with n_ctx={params.n_ctx}, "
                f"n_seq_max={params.n_seq_max} — lower them or free memory"
            )
        self._ctx: llama_cpp.llama_context_p | None = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ctx))
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(self._mem))
        self._threads = AdaptiveThreads(
            params.threads, enabled=params.adapt_threads, load=outside_load
        )
        self._batch = NativeBatch(params.n_batch)
        self.prefill_budget = PrefillBudget(params.max_frame_stretch or None)
        self._planned = BatchPlan()  # the batch being decoded
        self._pool = SequenceIdPool(params.n_seq_max)
        self._conversations: dict[int, Conversation] = {}
        self._epoch = 0
        self._busy = False
        self.stats = DecodeStats()
        self._abort_callback = native_abort_callback()
        self._never_cancelled = CancellationToken()
        llama_cpp.llama_set_abort_callback(
            ctx, self._abort_callback, ctypes.c_void_p(self._never_cancelled.address)
        )

    # -- properties -----------------------------------------------------------------------

    @property
    def model(self) -> LlamaWeights:
        return self._weights

    @property
    def params(self) -> ContextParams:
        return self._params

    @property
    def context(self) -> llama_cpp.llama_context_p:
        self.check_open()
        assert self._ctx is not None
        return self._ctx

    @property
    def threads(self) -> int:
        """Threads the next decode uses: ``params.threads``, less the cores other processes
        keep busy when ``params.adapt_threads`` is on."""
        return self._threads.current

    def watch_cpu(self) -> None:
        """Measure other processes' CPU use now (cheap, at most every 0.5 s): a decode loop
        calls it while idle, so that its first decode after a pause uses the right thread
        count from the start."""
        self._threads.observe()

    @property
    def cpu_taken_by_others(self) -> float:
        """Cores other processes kept busy in the last measured interval (0 where unknown)."""
        return self._threads.others

    @property
    def epoch(self) -> int:
        """Bumped by every successful decode; logits are valid for one epoch."""
        return self._epoch

    @property
    def is_disposed(self) -> bool:
        return self._ctx is None

    @property
    def batched_token_count(self) -> int:
        """Tokens queued by all conversations, waiting for ``infer()``."""
        return sum(c.pending_count for c in self._conversations.values())

    @property
    def conversations(self) -> tuple[Conversation, ...]:
        return tuple(self._conversations.values())

    @property
    def tokens_in_kv(self) -> int:
        """Decoded tokens over all conversations. A fork's shared prefix counts once per
        conversation, so this is an upper bound on the KV cells in use."""
        return sum(c.token_count for c in self._conversations.values())

    @property
    def free_sequences(self) -> int:
        return self._pool.available

    # -- conversations --------------------------------------------------------------------

    def create(self, sampling: SamplingParams | None = None) -> Conversation:
        """Open an empty conversation on a free sequence id."""
        self.check_open()
        return self.adopt(SamplerChain(sampling or SamplingParams(), self._weights.n_vocab))

    def prompt(self, text: str) -> Conversation:
        """Deprecated: use ``create()`` and then ``conversation.prompt(text)``."""
        warnings.warn(
            "BatchedExecutor.prompt() is deprecated; use create() then conversation.prompt()",
            DeprecationWarning,
            stacklevel=2,
        )
        conversation = self.create()
        conversation.prompt(text)
        return conversation

    def load(
        self,
        state: ConversationState | str | Path,
        sampling: SamplingParams | None = None,
    ) -> Conversation:
        """Rebuild a saved conversation on a free sequence id without decoding its tokens.

        Raises :class:`StateError` when the state is corrupt, from other weights, or does not
        fit; the caller can then fall back to prompting ``state.tokens`` again.
        """
        self.check_idle()
        if not isinstance(state, ConversationState):
            state = ConversationState.read(state)
        if state.fingerprint != self._weights.fingerprint:
            raise StateError(
                f"saved conversation belongs to other weights ({state.fingerprint}), not "
                f"{self._weights.fingerprint} — re-prompt its tokens instead"
            )
        sampler = SamplerChain(sampling or SamplingParams(), self._weights.n_vocab)
        conversation = self.adopt(sampler, state.tokens)
        seq = conversation.sequence_id
        data = (ctypes.c_uint8 * len(state.kv_data)).from_buffer_copy(state.kv_data)
        read = llama_cpp.llama_state_seq_set_data(self.context, data, len(state.kv_data), seq)
        pos_max = llama_cpp.llama_memory_seq_pos_max(self._mem, seq)
        if read == 0 or pos_max != len(state.tokens) - 1:
            conversation.dispose()
            raise StateError(
                "saved KV data does not fit this context (corrupt, other settings, or too few "
                "free cells) — re-prompt its tokens instead"
            )
        return conversation

    # -- decoding -------------------------------------------------------------------------

    def infer_sync(self, cancel: CancellationToken | None = None) -> DecodeResult:
        """Decode one batch in the calling thread (llama.cpp releases the GIL meanwhile)."""
        plan = self._begin()
        if not plan.chunks:
            return DecodeResult.OK
        try:
            result = self._decode(cancel)
        finally:
            self._busy = False
        return self._commit(plan, result)

    async def infer(self, cancel: CancellationToken | None = None) -> DecodeResult:
        """Decode one batch in a worker thread so the event loop keeps running."""
        plan = self._begin()
        if not plan.chunks:
            return DecodeResult.OK
        try:
            result = await asyncio.to_thread(self._decode, cancel)
        finally:
            self._busy = False
        return self._commit(plan, result)

    def _begin(self) -> BatchPlan:
        self.check_idle()
        self._planned = plan = self._plan()
        if plan.chunks:
            self._busy = True
        return plan

    def _plan(self) -> BatchPlan:
        """Fill the batch: every single queued token first, then chunks of longer prompts."""
        batch = self._batch
        batch.clear()
        chunks: list[PlannedChunk] = []
        convs = list(self._conversations.values())
        # n_batch >= n_seq_max (ContextParams checks it), so every single token fits.
        for conv in (c for c in convs if c.pending_count == 1):
            row = batch.add(conv.sequence_id, conv.queued(1), conv.token_count, True)
            chunks.append(PlannedChunk(conv, 1, row, True))
        generators = len(chunks)
        budget = self.prefill_budget.limit(generators, batch.free)
        reserve = self.prefill_budget.output_reserve(generators)
        outputs = 0
        for conv in convs:
            if budget == 0:
                break
            remaining = conv.pending_count
            if remaining > 1:
                n = min(remaining, budget)
                if n == remaining and n + reserve > budget:
                    # Its logits row would overrun the frame: end the prompt next frame, with
                    # few enough tokens to leave room for that row.
                    n = remaining - max(1, min(remaining - 1, budget - reserve))
                budget -= n
                completes = n == remaining
                outputs += completes
                row = batch.add(conv.sequence_id, conv.queued(n), conv.token_count, completes)
                chunks.append(PlannedChunk(conv, n, row, completes))
        return BatchPlan(tuple(chunks), generators, batch.n_tokens - generators, outputs)

    def _decode(self, cancel: CancellationToken | None) -> DecodeResult:
        token = cancel or self._never_cancelled
        if token.cancelled:
            return DecodeResult.COMPUTE_ABORTED
        ctx = self.context
        llama_cpp.llama_set_abort_callback(
            ctx, self._abort_callback, ctypes.c_void_p(token.address)
        )
        threads = self._threads.update()
        if threads is not None:
            params = self._params
            batch_threads = params.threads_batch if threads == params.threads else threads
            llama_cpp.llama_set_n_threads(ctx, threads, min(batch_threads, params.threads_batch))
            self.stats.thread_changes += 1
        started = time.perf_counter()
        code = llama_cpp.llama_decode(ctx, self._batch.as_struct())
        elapsed = time.perf_counter() - started
        stats = self.stats
        stats.decode_calls += 1
        stats.decode_seconds += elapsed
        stats.last_decode_seconds = elapsed
        stats.last_batch_tokens = self._batch.n_tokens
        if code == 0:
            stats.tokens_decoded += self._batch.n_tokens
            plan = self._planned
            self.prefill_budget.observe(
                plan.generators, plan.prompt_tokens, elapsed, plan.prompt_outputs
            )
        return DecodeResult.from_code(code)

    def _commit(self, plan: BatchPlan, result: DecodeResult) -> DecodeResult:
        if result is DecodeResult.OK:
            self._epoch += 1
            for chunk in plan.chunks:
                row = chunk.last_row if chunk.completes else None
                chunk.conversation.commit(chunk.count, row, self._epoch)
            return result
        # Undo whatever ubatches llama.cpp kept before failing.
        for chunk in plan.chunks:
            chunk.conversation.drop_undecoded_cells()
        if result in _LOGITS_LOST:
            # llama.cpp already reset its outputs: conversations waiting to sample queue their
            # last token again, so the retry recomputes their logits.
            for conv in self._conversations.values():
                conv.requeue_unsampled()
        return result

    def warm_up(self) -> None:
        """Decode a few tokens on a scratch conversation, so that llama.cpp's first-decode
        allocations are not paid by the first real reply.

        Call it from the thread that will decode: with llama.cpp built with OpenMP, a thread
        that has decoded keeps its worker team alive, and decoding from another thread while it
        lives was measured ~22% slower (docs/BENCHMARKS.md).
        """
        self.check_idle()
        if not self._pool.available:
            return
        conv = self.create(SamplingParams(temperature=0.0))
        try:
            conv.prompt("Warm up:")
            for _ in range(3):
                if not self.infer_sync().ok:
                    break
                conv.prompt([conv.sample()])
        finally:
            conv.dispose()

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose every conversation and free the context. Idempotent."""
        if self._ctx is None:
            return
        if self._busy:
            raise ExecutorBusyError("cannot close the executor while infer() is running")
        for conv in list(self._conversations.values()):
            conv.dispose()
        llama_cpp.llama_free(self._ctx)
        self._ctx = None

    dispose = close

    def __enter__(self) -> BatchedExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Conversation]:
        return iter(self.conversations)

    # -- the cache, per sequence: what conversations build their operations on ------------

    def check_open(self) -> None:
        if self._ctx is None:
            raise ExecutorDisposedError("the executor was closed — create a new one")

    def check_idle(self) -> None:
        """Raise unless the context may be touched: open, and no decode running."""
        self.check_open()
        if self._busy:
            raise ExecutorBusyError(
                "a decode is running — wait for infer() to return before touching the context"
            )

    def adopt(
        self,
        sampler: SamplerChain,
        tokens: Sequence[int] = (),
        *,
        shared_upto: int = 0,
        logits: tuple[int | None, int] = (None, -1),
    ) -> Conversation:
        """A conversation on a free sequence id whose cells already hold ``tokens`` (a fork's
        copy, a loaded state); ``create()`` is the usual way in."""
        self.check_idle()
        try:
            seq = self._pool.acquire()
        except Exception:
            sampler.free()
            raise
        conv = Conversation(self, seq, sampler, tokens, shared_upto=shared_upto, logits=logits)
        self._conversations[seq] = conv
        return conv

    def release(self, conv: Conversation) -> None:
        """Purge a conversation (its ``dispose()``): its cells are freed and its queued tokens
        leave the queue before its id is reused."""
        if self._ctx is not None:
            self.check_idle()
            self.remove_positions(conv.sequence_id, -1, -1)
        self._conversations.pop(conv.sequence_id, None)
        self._pool.release(conv.sequence_id)

    def copy_sequence(self, src: int, dst: int) -> None:
        """Let sequence ``dst`` share every cell of ``src`` (nothing is decoded)."""
        self.check_idle()
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def remove_positions(self, seq: int, start: int, end: int) -> None:
        """Free a sequence's cells at positions ``[start, end)`` (-1: open-ended)."""
        self.check_idle()
        llama_cpp.llama_memory_seq_rm(self._mem, seq, start, end)

    def shift_positions(self, seq: int, start: int, end: int, delta: int) -> None:
        """Move a sequence's cells at positions ``[start, end)`` by ``delta`` positions."""
        self.check_idle()
        llama_cpp.llama_memory_seq_add(self._mem, seq, start, end, delta)

    def read_sequence(self, seq: int) -> bytes:
        """A sequence's KV data, as ``llama_state_seq_get_data`` writes it."""
        self.check_idle()
        ctx = self.context
        size = llama_cpp.llama_state_seq_get_size(ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, seq)
        return ctypes.string_at(buf, written)

    def seq_pos_max(self, seq: int) -> int:
        """Highest KV position held by a sequence id (-1 when it holds none)."""
        self.check_open()
        return int(llama_cpp.llama_memory_seq_pos_max(self._mem, seq))
