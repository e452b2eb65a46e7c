"""Headless demo: ``python -m core "prompt one" "prompt two" ...``.

Every prompt becomes a conversation; all of them are decoded together, one batch per step, and
their replies stream to the terminal, one line per conversation, then the aggregate speed.
"""

from __future__ import annotations

import argparse
import sys
import time

from core.chat_template import ChatMessage, template_for
from core.errors import PanechatError
from core.executor import BatchedExecutor
from core.model_path import resolve_model_path
from core.params import ContextParams
from core.reply_stream import ReplyStream
from core.sampling import SamplingParams
from core.weight_layout import add_layout_option
from core.weights import LlamaWeights

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
    parser.add_argument("--template", default="auto", help="chat template (auto, transcript, ...)")
    add_layout_option(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    weights = LlamaWeights.load(resolve_model_path(args.model), layout=args.weight_layout)
    template = template_for(weights.chat_template, args.template)
    n = len(args.prompts)
    params = ContextParams(n_ctx=max(2048, n * 512), n_seq_max=max(n, 1))
    sampling = SamplingParams(temperature=args.temperature, seed=args.seed)
    with BatchedExecutor(weights, params) as executor:
        convs, replies = [], []
        for question in args.prompts:
            conv = executor.create(sampling)
            messages = [ChatMessage("system", args.system), ChatMessage("user", question)]
            conv.prompt(template.render(messages))
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
