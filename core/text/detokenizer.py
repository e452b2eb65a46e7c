"""Incremental detokenization: token pieces are bytes, and a token may end mid-character."""

from __future__ import annotations

import codecs
from collections.abc import Callable


class IncrementalDetokenizer:
    """Turns a stream of token ids into text without ever emitting half a UTF-8 character.

    Token pieces are raw bytes (byte-fallback vocabularies split emoji and CJK characters over
    several tokens), so the bytes go through Python's incremental UTF-8 decoder, which holds an
    incomplete sequence back until the next token completes it.
    """

    __slots__ = ("_decoder", "_piece")

    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        """Add one token; return the text it completes (possibly empty)."""
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        """End of stream: return whatever is held back (an incomplete tail becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)

    def reset(self) -> None:
        self._decoder.reset()

    @property
    def pending_bytes(self) -> int:
        """How many bytes are held back waiting for the rest of a character."""
        buffered, _ = self._decoder.getstate()
        return len(buffered)
