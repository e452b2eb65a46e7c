"""``python -m core.diagnostics.rpc_compare --rpc HOST:PORT[,...]``: do RPC servers compute
what this CPU computes? Greedy text through RPC may differ from a local run, and this tells
rounding from a fault.

It decodes a prompt greedily on this machine's CPU, then feeds the same tokens through the RPC
servers (and, when the local layout repacks weights, through this CPU with the plain layout),
and compares each position's logits: the largest difference, where the greedy choices first
part, and how close the two best tokens were there. llama.cpp's RPC server holds weights as
stored in the file (its device's default buffer type, never CPU_REPACK or AMX), so on loopback
RPC matches the local ``plain`` layout bit for bit; repacked kernels round differently.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.__main__ import DEFAULT_SYSTEM, chat_messages
from core.errors import PanechatError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.native.device_placement import DevicePlacement, add_placement_options, placement_from_args
from core.native.weight_layout import WeightLayout, add_layout_option
from core.templates.template_choice import model_template

DEFAULT_PROMPT = "The capital of France is"
#: Logits closer than this count as the same computation (measured: exactly 0 on loopback).
SAME = 1e-3


@dataclass(frozen=True, slots=True)
class LogitTrace:
    """The logits at each generated position of one decode, and its greedy choice there."""

    label: str  # "local repack", "RPC 127.0.0.1:50052", …
    rows: npt.NDArray[np.float32]  # (positions, n_vocab)

    @property
    def greedy(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argmax(self.rows, axis=1))

    def top2(self, position: int) -> tuple[tuple[int, float], tuple[int, float]]:
        row = self.rows[position]
        second, first = np.argpartition(row, -2)[-2:]
        if row[second] > row[first]:
            first, second = second, first
        return (int(first), float(row[first])), (int(second), float(row[second]))


def trace(
    weights: LlamaWeights,
    label: str,
    prompt: Sequence[int],
    positions: int,
    forced: Sequence[int] | None = None,
) -> LogitTrace:
    """Decode ``prompt`` greedily for ``positions`` tokens (or feed ``forced``, one each
    position, so that two traces see the same text), keeping each position's logits."""
    rows: list[npt.NDArray[np.float32]] = []
    count = len(forced) if forced is not None else positions
    params = ContextParams(n_ctx=len(prompt) + count + 16, n_seq_max=1, adapt_threads=False)
    with BatchedExecutor(weights, params) as executor:
        conv = executor.create()
        conv.prompt(list(prompt))
        for position in range(count):
            while not conv.requires_sampling:
                result = executor.infer_sync()
                if not result.ok:
                    raise PanechatError(f"decode failed ({label}): {result.name}")
            rows.append(conv.logits())
            token = forced[position] if forced is not None else int(np.argmax(rows[-1]))
            if forced is None and weights.is_eog(token):
                break
            conv.prompt([token])
    return LogitTrace(label, np.stack(rows))


@dataclass(frozen=True, slots=True)
class TraceComparison:
    """Two traces of the same text, position by position."""

    a: LogitTrace
    b: LogitTrace

    @property
    def max_abs_diff(self) -> tuple[float, ...]:
        """The largest logit difference at each position."""
        return tuple(float(d) for d in np.abs(self.a.rows - self.b.rows).max(axis=1))

    @property
    def largest_logit(self) -> float:
        return float(np.abs(self.a.rows).max())

    @property
    def first_divergence(self) -> int | None:
        """The first position whose greedy choices differ (None: the same throughout)."""
        return next(
            (
                p
                for p, (x, y) in enumerate(zip(self.a.greedy, self.b.greedy, strict=True))
                if x != y
            ),
            None,
        )

    @property
    def same(self) -> bool:
        return max(self.max_abs_diff) <= SAME

    def summary(self, weights: LlamaWeights) -> str:
        """One line: how far apart the logits are, and where the greedy text parts."""
        diffs = self.max_abs_diff
        head = f"{self.a.label} vs {self.b.label}: "
        if self.same:
            agree = "are identical" if max(diffs) == 0 else f"agree within {max(diffs):.2g}"
            return f"{head}logits {agree} at all {len(diffs)} tokens"
        line = (
            f"{head}logits differ by up to {diffs[0]:.3g} at the first token, "
            f"{max(diffs):.3g} over {len(diffs)} tokens (largest logit {self.largest_logit:.3g})"
        )
        position = self.first_divergence
        if position is None:
            return f"{line}; the same greedy tokens"

        def pick(t: LogitTrace) -> str:
            (first, high), (second, low) = t.top2(position)
            text = weights.token_text
            return f"{text(first)!r} over {text(second)!r} by {high - low:.3f}"

        return (
            f"{line}; greedy text parts at token {position + 1}: "
            f"{self.a.label} picks {pick(self.a)}, {self.b.label} {pick(self.b)}"
        )

    def as_json(self) -> dict[str, Any]:
        position = self.first_divergence
        return {
            "a": self.a.label,
            "b": self.b.label,
            "max_abs_diff": list(self.max_abs_diff),
            "largest_logit": self.largest_logit,
            "first_divergence": position,
            "top2": None if position is None else [self.a.top2(position), self.b.top2(position)],
        }


@dataclass(frozen=True, slots=True)
class RpcComparison:
    """Local vs RPC, and — where the local layout repacks — the local plain layout vs both."""

    layout: WeightLayout  # the local load's layout in effect
    local_vs_rpc: TraceComparison
    plain_vs_rpc: TraceComparison
    local_vs_plain: TraceComparison | None

    def verdict(self) -> str:
        if not self.plain_vs_rpc.same:
            return (
                "RPC does not compute as this CPU does with the plain layout: expected when the "
                "servers are other CPUs or GPUs; on loopback, a fault worth reporting"
            )
        if self.local_vs_rpc.same:
            return "RPC computes as this CPU does"
        return (
            "RPC computes as this CPU does with --weight-layout plain: RPC servers "
            f"keep weights as stored in the file, and the {self.layout} kernels round "
            "differently — pass --weight-layout plain to get the RPC text locally"
        )

    def lines(self, weights: LlamaWeights) -> list[str]:
        if self.local_vs_plain is None:  # the local layout is plain already
            return [self.local_vs_rpc.summary(weights), self.verdict()]
        comparisons = (self.local_vs_rpc, self.local_vs_plain, self.plain_vs_rpc)
        return [*(c.summary(weights) for c in comparisons), self.verdict()]

    def as_json(self) -> dict[str, Any]:
        return {
            "local_layout": str(self.layout),
            "local_vs_rpc": self.local_vs_rpc.as_json(),
            "plain_vs_rpc": self.plain_vs_rpc.as_json(),
            "local_vs_plain": None
            if self.local_vs_plain is None
            else self.local_vs_plain.as_json(),
        }


def compare(
    local: LlamaWeights, placement: DevicePlacement, text: str, positions: int
) -> RpcComparison:
    """Trace the prompt as ``python -m core`` sends it with ``local`` (loaded on this CPU),
    then through the servers (the layout asked for applies to what stays here)."""
    model, layout = local.path, local.layout.requested
    template = model_template(local, "auto")
    prompt = local.tokenize_prompt(template.render(chat_messages(DEFAULT_SYSTEM, text)))
    effective = local.layout.effective
    here = trace(local, f"local {effective}", prompt, positions)
    plain = here
    if effective is not WeightLayout.PLAIN:
        with LlamaWeights.load(model, n_gpu_layers=0, layout=WeightLayout.PLAIN) as weights:
            plain = trace(weights, "local plain", prompt, positions, here.greedy)
    servers = ",".join(map(str, placement.rpc))
    with LlamaWeights.load(model, layout=layout, placement=placement) as weights:
        there = trace(weights, f"RPC {servers}", prompt, positions, here.greedy)
    return RpcComparison(
        effective,
        TraceComparison(here, there),
        TraceComparison(plain, there),
        None if plain is here else TraceComparison(here, plain),
    )


def write_json(path: Path, result: RpcComparison) -> None:
    try:
        path.write_text(json.dumps(result.as_json(), indent=1), encoding="utf-8")
    except OSError as e:
        raise PanechatError(f"cannot write {path}: {e.strerror or e}") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.diagnostics.rpc_compare",
        description="Compare the logits of a greedy decode on this CPU and through RPC servers.",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user's question")
    parser.add_argument("--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    parser.add_argument("--tokens", type=int, default=32, help="positions to compare (32)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    add_layout_option(parser)
    add_placement_options(parser)
    args = parser.parse_args(argv)
    try:
        placement = placement_from_args(args)
        if not placement.rpc:
            raise PanechatError("name the servers to compare with: --rpc HOST:PORT[,HOST:PORT]")
        if args.tokens < 1:
            raise PanechatError("--tokens must be at least 1")
        if args.json is not None and not args.json.parent.is_dir():
            raise PanechatError(f"cannot write {args.json}: no folder {args.json.parent}")
        placement.connect()  # a server that does not answer fails before anything is decoded
        model = resolve_model_path(args.model)
        with LlamaWeights.load(model, n_gpu_layers=0, layout=args.weight_layout) as local:
            result = compare(local, placement, args.prompt, args.tokens)
            print("\n".join(result.lines(local)))
        if args.json is not None:
            write_json(args.json, result)
    except PanechatError as e:
        print(f"python -m core.diagnostics.rpc_compare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
