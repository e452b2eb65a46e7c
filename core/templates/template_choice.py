"""Which chat format a model gets: its own Jinja template, or a built-in one by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import TemplateError
from core.templates.chat_template import BUILTIN_TEMPLATES, TRANSCRIPT, ChatFormat
from core.templates.jinja_template import JinjaTemplate

if TYPE_CHECKING:
    from core.models.weights import LlamaWeights

#: ``[model] template`` values besides the built-ins' names.
AUTO, JINJA = "auto", "jinja"
TEMPLATE_NAMES = (AUTO, JINJA, *BUILTIN_TEMPLATES)


def template_for(
    model_template: str | None,
    name: str = AUTO,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> ChatFormat:
    """``auto``: the model's own template (``model_template``), else the plain transcript (a
    base model without one); ``jinja``: the model's own, or an error; else a built-in."""
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    if name not in (AUTO, JINJA):
        known = ", ".join(TEMPLATE_NAMES)
        raise TemplateError(f"unknown chat template {name!r} — use one of: {known}")
    if model_template:
        return JinjaTemplate(model_template, bos_token=bos_token, eos_token=eos_token)
    if name == JINJA:
        raise TemplateError(
            "the model has no chat template of its own (no tokenizer.chat_template) — "
            f"choose a built-in one: {', '.join(BUILTIN_TEMPLATES)}"
        )
    return TRANSCRIPT


def model_template(weights: LlamaWeights, name: str = AUTO) -> ChatFormat:
    """The chat format for a loaded model (its template sees its BOS and EOS tokens' text)."""
    return template_for(
        weights.chat_template,
        name,
        bos_token=weights.token_text(weights.bos_token),
        eos_token=weights.token_text(weights.eos_token),
    )
