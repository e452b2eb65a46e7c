"""Headless demo: ``python -m core "prompt one" "prompt two" ...``.

Every prompt becomes a conversation; all of them are decoded together, one batch per step, and
their replies stream to the terminal, one line per conversation, then the aggregate speed.
``--show-prompt`` prints the exact prompt each chat would get instead (how a user checks a
model's chat template), and decodes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

from core.errors import PanechatError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.model_path import resolve_model_path
from core.models.progress_line import ProgressLine
from core.models.weights import LlamaWeights
from core.native.device_placement import add_placement_options, placement_from_args
from core.native.weight_layout import add_layout_option
from core.sampling.sampling import SamplingParams
from core.templates.chat_template import ChatFormat, ChatMessage
from core.templates.template_choice import TEMPLATE_NAMES, model_template
from core.text.reply_stream import ReplyStream

DEFAULT_SYSTEM = "A helpful assistant answers each question in one or two short sentences."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="Decode several chats at once, in one batch per step."
    )
    parser.add_argument("prompts", nargs="+", help="one question per conversation")
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt for every chat")
    parser.add_argument(
        "--template",
        default="auto",
        choices=TEMPLATE_NAMES,
        help="chat template: auto (the model's own, else transcript), jinja, or a built-in",
    )
    parser.add_argument(
        "--show-prompt",
        action="store_true",
        help="print the exact prompt text each chat would get (special tokens spelled out), "
        "then exit without decoding",
    )
    add_layout_option(parser)
    add_placement_options(parser)
    return parser.parse_args(argv)


def chat_messages(system: str, question: str) -> list[ChatMessage]:
    messages = [ChatMessage("system", system)] if system.strip() else []
    return [*messages, ChatMessage("user", question)]


def show_prompts(weights: LlamaWeights, template: ChatFormat, args: argparse.Namespace) -> None:
    """Each chat's prompt as the model receives it: the template's text, tokenized as the
    executor tokenizes it, every token (BOS and markers too) spelled as text."""
    for question in args.prompts:
        messages = chat_messages(args.system, question)
        tokens = weights.tokenize_prompt(template.render(messages))
        sys.stdout.write("".join(weights.token_text(t) for t in tokens))
        sys.stdout.write(f"\n[{len(tokens)} tokens, template {template.name}]\n")
        for adaptation in template.adaptations(messages):
            sys.stdout.write(f"[adapted: {adaptation.description}]\n")


def run(args: argparse.Namespace) -> None:
    model_path = resolve_model_path(args.model)
    with ProgressLine(f"loading {model_path.name}") as progress:  # on stderr
        weights = LlamaWeights.load(
            model_path,
            layout=args.weight_layout,
            placement=placement_from_args(args),
            progress=progress,
        )
    template = model_template(weights, args.template)
    if args.show_prompt:
        show_prompts(weights, template, args)
        return
    n = len(args.prompts)
    params = ContextParams(n_ctx=max(2048, n * 512), n_seq_max=max(n, 1))
    sampling = SamplingParams(temperature=args.temperature, seed=args.seed)
    with BatchedExecutor(weights, params) as executor:
        convs, replies = [], []
        for question in args.prompts:
            conv = executor.create(sampling)
            text = template.render(chat_messages(args.system, question))
            conv.prompt(weights.tokenize_prompt(text))
            convs.append(conv)
            replies.append(ReplyStream(weights, template.stop_strings, args.max_tokens))
        started = time.perf_counter()
        generated = 0
        while not all(r.done for r in replies):
            result = executor.infer_sync()
            if not result.ok:
                raise PanechatError(f"decode failed: {result.name}")
            for i, (conv, reply) in enumerate(zip(convs, replies, strict=True)):
                if reply.done or not conv.requires_sampling:
                    continue
                token = conv.sample()
                text = reply.feed(token)
                generated += 1
                if text:
                    print(f"[{i}] {text!r}", flush=True)
                if not reply.done:
                    conv.prompt([token])
        elapsed = time.perf_counter() - started
    print()
    for i, (question, reply) in enumerate(zip(args.prompts, replies, strict=True)):
        reason = reply.stop_reason.value if reply.stop_reason else "?"
        print(
            f"[{i}] {question}\n    → {reply.text.strip()}  ({reply.token_count} tokens, {reason})"
        )
    print(
        f"\n{n} conversations, {generated} tokens sampled in {elapsed:.2f} s: "
        f"{generated / elapsed:.1f} tokens/s aggregate (prompt prefill included)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except PanechatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
