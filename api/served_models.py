"""The models a server answers with, by the names requests give them."""

from __future__ import annotations

from dataclasses import dataclass

from core.chat.engine_group import DEFAULT


@dataclass(frozen=True, slots=True)
class ServedModels:
    """``default``: the name of the model the server was started with (its alias, or its
    file's stem); ``named``: the config's ``[models.NAME]``, loaded when first asked for."""

    default: str
    named: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.default, *(n for n in self.named if n != self.default))

    def key(self, name: str) -> str:
        """The name the decode loop knows the model by ("" for the default one)."""
        return DEFAULT if name == self.default else name
