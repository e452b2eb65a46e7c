"""A reply's tokens as the chat keeps them: each token's text, its probability and the
likeliest other tokens (:class:`core.sampling.token_choice.TokenChoice`, with text), to show
why a model said what it said and to branch at a token the model nearly chose."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.models.weights import LlamaWeights
from core.sampling.token_choice import TokenChoice


@dataclass(frozen=True, slots=True)
class Alternative:
    token: int
    piece: str  # the token's text
    probability: float


@dataclass(frozen=True, slots=True)
class TokenStat:
    """One sampled reply token: its text, probability, and the likeliest others; ``forced``
    when the user chose it in place of the model's (a reply branched at a token)."""

    token: int
    piece: str
    probability: float
    alternatives: tuple[Alternative, ...] = ()
    forced: bool = False

    def replaced_by(self, alternative: Alternative) -> TokenStat:
        """``alternative`` in this token's place, as the user chose it. It keeps the odds it
        was chosen from (this token now among the others), so the new reply shows them and
        can be branched again from the same point."""
        others = [a for a in self.alternatives if a.token != alternative.token]
        others.append(Alternative(self.token, self.piece, self.probability))
        others.sort(key=lambda a: a.probability, reverse=True)
        return TokenStat(
            alternative.token, alternative.piece, alternative.probability, tuple(others), True
        )


def piece_text(model: LlamaWeights, token: int) -> str:
    """A token's text as a :class:`TokenStat` keeps it (a piece that splits a character
    shows U+FFFD): what a reply's token is checked against before branching there."""
    return model.token_piece(token).decode("utf-8", errors="replace")


def token_stat(model: LlamaWeights, choice: TokenChoice) -> TokenStat:
    """A sampled token's choice, with each token's text (as the model spells it)."""
    return TokenStat(
        choice.token,
        piece_text(model, choice.token),
        choice.probability,
        tuple(Alternative(t, piece_text(model, t), p) for t, p in choice.alternatives),
    )


@dataclass(frozen=True, slots=True)
class ReplyOdds:
    """A reply's tokens with their odds, and which model wrote them (its name in the config,
    to say so; branching checks the tokens' text against the model's own vocabulary)."""

    model: str
    tokens: tuple[TokenStat, ...]

    def to_json(self) -> str:
        """``{"model": …, "tokens": [[token, piece, probability, [[token, piece,
        probability], …]], …]}``, probabilities to 4 places; a forced token's row ends with
        ``true`` (rows without it read as before)."""
        rows = []
        for s in self.tokens:
            others = [[a.token, a.piece, round(a.probability, 4)] for a in s.alternatives]
            row: list[Any] = [s.token, s.piece, round(s.probability, 4), others]
            rows.append([*row, True] if s.forced else row)
        return json.dumps({"model": self.model, "tokens": rows}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> ReplyOdds | None:
        """The odds written by :meth:`to_json`; None for none, or for anything damaged (the
        reply's text stays; only its odds are gone)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            model = data["model"]
            if not isinstance(model, str):
                return None
            return cls(model, tuple(_stat(item) for item in data["tokens"]))
        except (ValueError, TypeError, IndexError, KeyError, RecursionError):
            return None


def _stat(item: Any) -> TokenStat:
    token, piece, probability, alternatives, *forced = item
    if forced not in ([], [True]):
        raise ValueError("a token's row ends with its alternatives, or true when forced")
    return TokenStat(
        _int(token),
        _str(piece),
        _float(probability),
        tuple(Alternative(_int(t), _str(p), _float(q)) for t, p, q in alternatives),
        bool(forced),
    )


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError("a token id is an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a piece is text")
    return value


def _float(value: Any) -> float:
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise ValueError("a probability is a number in [0, 1]")
    return float(value)
