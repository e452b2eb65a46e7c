"""One conversation: a llama.cpp sequence in the executor's shared context."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core.errors import (
    AlreadyPromptedError,
    ConversationDisposedError,
    ForkPendingTokensError,
    InvalidParamsError,
    KvShiftError,
    NoLogitsError,
    RequiresInferenceError,
    RewindError,
)
from core.executor.conversation_state import ConversationState
from core.executor.kv_accessor import KvAccessor
from core.sampling.sampling import SamplerChain, SamplingParams, logits_row
from core.sampling.token_choice import TokenChoice, token_choice

if TYPE_CHECKING:
    from core.executor.executor import BatchedExecutor


class Conversation:
    """A sequence of tokens in the shared KV cache, with its own sampler.

    Life cycle (as in LLamaSharp): :meth:`prompt` queues tokens (``requires_inference``), the
    executor's ``infer()`` decodes them with every other conversation's, after which the logits
    of the last token are fresh (``requires_sampling``) until the next ``infer()``. Create
    conversations with ``executor.create()``, never directly.
    """

    def __init__(
        self,
        executor: BatchedExecutor,
        sequence_id: int,
        sampler: SamplerChain,
        tokens: Sequence[int] = (),
        *,
        shared_upto: int = 0,
        logits: tuple[int | None, int] = (None, -1),
    ) -> None:
        self._executor = executor
        self._seq_id = sequence_id
        self._sampler = sampler
        self._tokens: list[int] = list(tokens)  # decoded: KV positions 0..len-1
        self._pending: list[int] = []  # queued for the next infer()
        # batch row holding our last token's logits, and the executor epoch it belongs to
        self._logits_index, self._logits_epoch = logits
        self._shared_upto = shared_upto  # KV positions below this may be shared with a fork
        self._disposed = False
        #: Keep :attr:`last_choice` for each sampled token (a chat shows them); off for the
        #: executor's other users, who pay nothing for it.
        self.records_choices = False
        self.last_choice: TokenChoice | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def executor(self) -> BatchedExecutor:
        return self._executor

    @property
    def sequence_id(self) -> int:
        return self._seq_id

    @property
    def is_disposed(self) -> bool:
        return self._disposed

    @property
    def token_count(self) -> int:
        """Tokens decoded into the KV cache (queued tokens not included)."""
        return len(self._tokens)

    @property
    def tokens(self) -> tuple[int, ...]:
        """Decoded tokens, oldest first."""
        return tuple(self._tokens)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_tokens(self) -> tuple[int, ...]:
        """Tokens queued for the next infer(), oldest first."""
        return tuple(self._pending)

    def begins_with(self, prefix: Sequence[int]) -> bool:
        """Whether the conversation starts with ``prefix``, counting queued tokens too."""
        n = len(prefix)
        head = self._tokens[:n]
        if len(head) < n:
            head += self._pending[: n - len(head)]
        return head == list(prefix)

    @property
    def requires_inference(self) -> bool:
        """Tokens are queued and waiting for ``infer()``."""
        return bool(self._pending)

    @property
    def requires_sampling(self) -> bool:
        """The last ``infer()`` produced this conversation's logits; sample them now."""
        return (
            not self._disposed
            and not self._pending
            and self._logits_index is not None
            and self._logits_epoch == self._executor.epoch
        )

    @property
    def sampling(self) -> SamplingParams:
        return self._sampler.params

    @sampling.setter
    def sampling(self, params: SamplingParams) -> None:
        """Replace the sampler chain (its history and random state start afresh)."""
        self._check_alive()
        old, self._sampler = self._sampler, SamplerChain(params, self._executor.model.n_vocab)
        old.free()

    # -- operations -----------------------------------------------------------------------

    def prompt(
        self, prompt: str | Sequence[int], *, add_bos: bool | None = None, special: bool = True
    ) -> int:
        """Queue text or token ids at the next positions; return how many tokens were queued.

        Text is tokenized here; ``add_bos`` defaults to the model's wish for the first prompt of
        an empty conversation. ``special`` parses template markers into their special tokens.
        """
        self._check_alive()
        if self._pending:
            raise AlreadyPromptedError(
                f"conversation {self._seq_id} already has {len(self._pending)} queued tokens — "
                "call infer() before prompting again"
            )
        if isinstance(prompt, str):
            model = self._executor.model
            if add_bos is None:
                add_bos = not self._tokens and model.add_bos
            tokens = model.tokenize(prompt, add_special=add_bos, parse_special=special)
        else:
            tokens = [int(t) for t in prompt]
            n_vocab = self._executor.model.n_vocab
            bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise InvalidParamsError(
                    f"token id {bad} is outside the vocabulary (0..{n_vocab - 1})"
                )
        if not tokens:
            raise InvalidParamsError("cannot prompt with nothing: the prompt has no tokens")
        self._pending = tokens
        self._logits_index = None
        return len(tokens)

    def discard_pending(self) -> int:
        """Drop tokens queued but not decoded yet (a stopped reply); return how many."""
        self._check_alive()
        dropped, self._pending = len(self._pending), []
        return dropped

    def sample(self) -> int:
        """Pick the next token from the fresh logits with this conversation's sampler chain
        (with :attr:`records_choices`, :attr:`last_choice` says what it was chosen from)."""
        index = self._fresh_logits_index()
        self._executor.check_idle()
        token = self._sampler.sample(self._executor.context, index)
        if self.records_choices:
            row = logits_row(self._executor.context, index, self._executor.model.n_vocab)
            self.last_choice = token_choice(row, token, self._sampler.ranked)
        return token

    def logits(self) -> npt.NDArray[np.float32]:
        """A copy of the fresh logits (one float per vocabulary entry)."""
        index = self._fresh_logits_index()
        self._executor.check_idle()
        return logits_row(self._executor.context, index, self._executor.model.n_vocab).copy()

    def accept(self, token: int) -> None:
        """Feed a token chosen outside :meth:`sample` into the sampler's penalty history."""
        self._check_alive()
        self._sampler.accept(token)

    def fork(self, sampling: SamplingParams | None = None) -> Conversation:
        """A new conversation that shares this one's KV prefix: nothing is decoded again.

        The fork gets a clone of the sampler (same history and random state) unless new
        ``sampling`` is given. If this conversation has fresh logits, so does the fork.
        """
        self._check_alive()
        if self._pending:
            raise ForkPendingTokensError(
                f"conversation {self._seq_id} has {len(self._pending)} undecoded tokens — "
                "call infer() before fork()"
            )
        executor = self._executor
        sampler = (
            self._sampler.clone()
            if sampling is None
            else SamplerChain(sampling, executor.model.n_vocab)
        )
        shared = len(self._tokens)
        logits = (self._logits_index, self._logits_epoch)
        child = executor.adopt(sampler, self._tokens, shared_upto=shared, logits=logits)
        executor.copy_sequence(self._seq_id, child.sequence_id)
        self._shared_upto = shared
        return child

    def rewind(self, n_tokens: int) -> None:
        """Forget the last ``n_tokens`` decoded tokens; prompt again before sampling."""
        self._check_alive()
        if self._pending:
            raise RequiresInferenceError(
                f"conversation {self._seq_id} has queued tokens — call infer() before rewind()"
            )
        if not 0 <= n_tokens <= len(self._tokens):
            raise RewindError(
                f"cannot rewind {n_tokens} tokens: conversation {self._seq_id} holds "
                f"{len(self._tokens)}"
            )
        if n_tokens:
            self._cut(len(self._tokens) - n_tokens, len(self._tokens))

    @property
    def kv(self) -> KvAccessor:
        """Edits of this conversation's KV cache that keep positions consecutive."""
        self._check_alive()
        return KvAccessor(self)

    def shift_left(self, discard: int, keep: int = 0) -> None:
        """Context shift: drop ``discard`` tokens after the first ``keep`` and slide the rest."""
        self.kv.remove(keep, discard)

    def save(self, path: str | Path | None = None) -> ConversationState:
        """Snapshot tokens and KV data (and write them to ``path`` if given)."""
        self._check_alive()
        if self._pending:
            raise RequiresInferenceError(
                f"conversation {self._seq_id} has queued tokens — call infer() before save()"
            )
        state = ConversationState(
            tokens=tuple(self._tokens),
            kv_data=self._executor.read_sequence(self._seq_id),
            fingerprint=self._executor.model.fingerprint,
        )
        if path is not None:
            state.write(path)
        return state

    def dispose(self) -> None:
        """Free the KV cells and the sequence id; queued tokens are dropped. Idempotent."""
        if self._disposed:
            return
        self._executor.release(self)
        self._pending = []
        self._logits_index = None
        self._sampler.free()
        self._disposed = True

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        state = "disposed" if self._disposed else f"{len(self._tokens)} tokens"
        return f"<Conversation seq={self._seq_id} {state}, {len(self._pending)} queued>"

    def remove_tokens(self, start: int, count: int) -> bool:
        """Drop decoded tokens ``[start, start + count)`` and close the gap (``kv.remove``).

        When llama.cpp can shift this model's cache and the cells after the span belong to
        this conversation alone, the gap is closed by shifting positions: no decode, True.
        Cells below a fork point may be shared with another conversation, and shifting a shared
        cell would move it for both; then, as for models that cannot shift, the tail is queued
        to be decoded again (``requires_inference``) and the result is False."""
        self._check_alive()
        if self._pending:
            raise RequiresInferenceError(
                f"conversation {self._seq_id} has queued tokens — call infer() first"
            )
        n = len(self._tokens)
        if start < 0 or count < 0 or start + count > n:
            raise KvShiftError(
                f"cannot remove tokens [{start}, {start + count}) from a conversation of {n}"
            )
        if count == 0:
            return True
        end = start + count
        shifted = self._executor.can_shift and end >= self._shared_upto
        self._cut(start, end, shift_tail=shifted)
        return shifted

    # -- the executor's side of a batch: plan, commit, roll back ----------------------------

    def queued(self, limit: int) -> list[int]:
        """The first ``limit`` queued tokens (the chunk the executor plans to decode next)."""
        return self._pending[:limit]

    def commit(self, count: int, logits_row: int | None, epoch: int) -> None:
        """The executor decoded the first ``count`` queued tokens; if that ended the queue,
        the last one's logits are in batch row ``logits_row``, valid during ``epoch``."""
        self._tokens.extend(self._pending[:count])
        del self._pending[:count]
        if logits_row is not None:
            self._logits_index, self._logits_epoch = logits_row, epoch

    def drop_undecoded_cells(self) -> None:
        """After a failed decode: free the cells llama.cpp kept beyond the decoded tokens."""
        if not self._disposed:
            self._executor.remove_positions(self._seq_id, len(self._tokens), -1)

    def requeue_unsampled(self) -> None:
        """After a failed decode that lost every logits row: if this conversation was waiting
        to sample, queue its last token again so that the retry computes its logits anew."""
        if self.requires_sampling and self._tokens:
            last = self._tokens[-1]
            self._cut(len(self._tokens) - 1, len(self._tokens))
            self._pending = [last]

    # -- internals --------------------------------------------------------------------------

    def _cut(self, start: int, end: int, *, shift_tail: bool = False) -> None:
        """The one KV edit: remove positions ``[start, end)``. With ``shift_tail`` the tokens
        after them slide down in place; without, they leave the cache and are queued again.
        Token list, cache cells, fork point and logits stay in step."""
        assert not self._pending, "KV edits need the queued tokens decoded first"
        executor, tail = self._executor, self._tokens[end:]
        if shift_tail:
            executor.remove_positions(self._seq_id, start, end)
            if tail:
                executor.shift_positions(self._seq_id, end, -1, start - end)
            del self._tokens[start:end]
        else:
            executor.remove_positions(self._seq_id, start, -1)
            del self._tokens[start:]
            self._pending = tail
        self._shared_upto = min(self._shared_upto, start)
        self._logits_index = None

    def _check_alive(self) -> None:
        if self._disposed:
            raise ConversationDisposedError(
                f"conversation {self._seq_id} was disposed — create a new one"
            )
        self._executor.check_open()

    def _fresh_logits_index(self) -> int:
        self._check_alive()
        if self._pending:
            raise RequiresInferenceError(
                f"conversation {self._seq_id} has queued tokens — call infer() before sampling"
            )
        if not self.requires_sampling or self._logits_index is None:
            raise NoLogitsError(
                f"conversation {self._seq_id} has no fresh logits — prompt it and call infer() "
                "first (logits last only until the next infer())"
            )
        return self._logits_index
