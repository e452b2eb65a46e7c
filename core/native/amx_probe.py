"""``python -m core.native.amx_probe --layout amx|repack [MODEL]``: the child process of the AMX
trial (:mod:`core.native.amx_trial`). It loads a model on the CPU with the given weight layout,
decodes a little, and prints ``ok``; if llama.cpp's kernels fault, it dies instead, and only
it does. Not imported by the ``core`` package: it only ever runs as a program.

On the embedded Gemma 3 270M, AMX takes the Q4_K, Q6_K and Q8_0 matrices whose shapes its
kernels accept (attention output and value, feed-forward down); the Q5_0 ones and the
embeddings stay in CPU memory. That is the decode that crashed on the affected machines.
"""

from __future__ import annotations

import argparse

from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.native.weight_layout import WeightLayout
from core.sampling.sampling import SamplingParams

WORDS = "The quick brown fox jumps over the lazy dog. " * 40


def probe(model: str | None, layout: WeightLayout) -> None:
    """Prefill prompts of a few sizes (AMX tiles), then decode eight sequences step by step
    (AMX's small-batch kernels), sampling each. No GPU layers, or AMX would hold nothing."""
    greedy = SamplingParams(temperature=0)
    with (
        LlamaWeights.load(resolve_model_path(model), 0, layout) as weights,
        BatchedExecutor(weights, ContextParams(n_ctx=2048, n_batch=256, n_seq_max=8)) as executor,
    ):
        tokens = weights.tokenize(WORDS)
        for length in (17, 64, 160):
            conv = executor.create(greedy)
            conv.prompt(tokens[:length])
            if not executor.infer_sync().ok:
                raise SystemExit("a trial prefill failed")
            conv.sample()
            conv.dispose()
        convs = [executor.create(greedy) for _ in range(8)]
        for i, conv in enumerate(convs):
            conv.prompt(f"Question {i}: what is {i} plus {i}? Answer:")
        for _ in range(6):
            if not executor.infer_sync().ok:
                raise SystemExit("a trial decode failed")
            for conv in convs:
                conv.prompt([conv.sample()])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m core.native.amx_probe")
    parser.add_argument("--layout", type=WeightLayout.parse, default=WeightLayout.AMX)
    parser.add_argument("model", nargs="?", help="GGUF file (default: the embedded model)")
    args = parser.parse_args()
    probe(args.model, args.layout)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
