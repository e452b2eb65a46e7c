"""One chat's settings: its name, system prompt, sampling and how its replies end."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.sampling.sampling import SamplingParams


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """How one chat talks: a pane of the app, or a chat of a script."""

    name: str
    system: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 200
    stop: tuple[str, ...] = ()  # strings that end a reply (the embedded base model: "\n\n")
    model: str = ""  # which model answers ("" the default; see ChatEngineGroup)
    show_reasoning: bool = True  # a view shows a reasoning model's thoughts (the engine ignores it)
    raw_prompt: bool = False  # no chat format: the one turn is the whole prompt (a completion)
