"""What a chat's model holds, read between two frames: a caller checks the KV against the
chat (its cells equal the template's rendering of the turns it holds) through this, never
through the engine's bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeldTurn:
    """One turn the KV holds: the user's text, the reply as the model read it (its
    reasoning left out where the template leaves it out), and where the turn begins."""

    user: str
    reply: str
    start: int


@dataclass(frozen=True, slots=True)
class ChatContext:
    """A chat's KV now: the turns it holds (after a context shift, the branch shown's newest:
    ``dropped`` older ones are out), its tokens, the chat's template rendering those turns,
    how many positions the KV sequence holds, and where the last reply begins."""

    turns: tuple[HeldTurn, ...]
    tokens: tuple[int, ...]
    rendered: tuple[int, ...]  # () when the template refuses the chat
    cells: int
    reply_start: int
    dropped: int = 0

    @property
    def users(self) -> list[str]:
        """The user turns held, oldest first."""
        return [turn.user for turn in self.turns]

    @property
    def in_step(self) -> bool:
        """The KV holds exactly the rendering of the turns it holds, and nothing past it:
        what a chat has once a branch is shown (a reply just ended lacks the template's end
        of its turn until the next turn is decoded with it)."""
        return self.tokens == self.rendered and self.cells == len(self.tokens)
