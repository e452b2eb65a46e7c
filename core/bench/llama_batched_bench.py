"""The executor against llama.cpp's own ``llama-batched-bench``, on the same batches and the same
libraries, in alternating rounds.

Both sides run :mod:`core.bench.decode_workload`'s workload (N chats of ``pp`` random prompt
tokens, then ``tg`` generated tokens each, one batch per step, on a unified KV cache of the
same size, n_batch = n_ubatch = 512, the same thread count). The executor side runs in a child
process that loads the libllama/libggml the C++ tool links, where that build has shared
libraries (``LLAMA_CPP_LIB_PATH``), so a ratio compares the two loops, not two builds. Rounds
alternate which side goes first, and each ratio is the median of its rounds: these machines
drift by several percent within minutes, and a single pair would measure the drift.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.bench.decode_workload import WorkloadTiming
from core.errors import PanechatError

TOOL = "llama-batched-bench"
#: How to get the tool, for the line printed when it is missing (docs/BENCHMARKS.md has more).
HOW_TO_BUILD = (
    "build it from llama-cpp-python's vendored llama.cpp as docs/BENCHMARKS.md shows, then "
    "pass --llama-bin PATH"
)
#: Generous: a 3B model's batch of 64 on 2 cores takes minutes.
TIMEOUT_SECONDS = 1800


class LlamaToolMissing(PanechatError):
    """No llama-batched-bench where it was asked for (or on PATH)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What both sides decode: batch sizes, prompt and generated tokens per chat, KV cells."""

    sizes: tuple[int, ...]
    prompt_tokens: int
    generated_tokens: int
    n_ctx: int
    threads: int


@dataclass(frozen=True, slots=True)
class SizeComparison:
    """One batch size over every round: each side's timings, round by round."""

    conversations: int
    executor: tuple[WorkloadTiming, ...]
    llama: tuple[WorkloadTiming, ...]

    def _ratios(self, rate: Callable[[WorkloadTiming], float]) -> list[float]:
        """The executor's rate over batched-bench's, pair by pair."""
        return [
            rate(e) / rate(c) if rate(c) > 0 else 0.0
            for e, c in zip(self.executor, self.llama, strict=True)
        ]

    def _median_ratio(self, rate: Callable[[WorkloadTiming], float]) -> float:
        return statistics.median(self._ratios(rate))

    @property
    def decode_ratio_range(self) -> tuple[float, float]:
        """The lowest and highest pair's S_TG ratio: how much the machine moved."""
        ratios = self._ratios(lambda t: t.decode_rate)
        return min(ratios), max(ratios)

    @property
    def decode_ratio(self) -> float:
        """The executor's S_TG over batched-bench's, median over rounds."""
        return self._median_ratio(lambda t: t.decode_rate)

    @property
    def overall_ratio(self) -> float:
        """The same for S (prompts and generation together)."""
        return self._median_ratio(lambda t: t.overall_rate)

    @property
    def prefill_ratio(self) -> float:
        """The same for S_PP."""
        return self._median_ratio(lambda t: t.prefill_rate)

    def ratios(self) -> dict[str, float | int]:
        """What the JSON document keeps beside the timings."""
        return {
            "conversations": self.conversations,
            "decode_ratio": self.decode_ratio,
            "overall_ratio": self.overall_ratio,
            "prefill_ratio": self.prefill_ratio,
        }

    def speedup_over(self, single: SizeComparison) -> tuple[float, float]:
        """S_TG here over ``single``'s (N=1), the executor's and batched-bench's (medians)."""

        def rate(t: WorkloadTiming) -> float:
            return t.decode_rate

        ours = self.executor_median(rate) / (single.executor_median(rate) or 1.0)
        theirs = self.llama_median(rate) / (single.llama_median(rate) or 1.0)
        return ours, theirs

    @property
    def outside_decode_share(self) -> float:
        """The executor's time per step outside llama_decode, median over its runs."""
        return statistics.median(t.outside_decode_share or 0.0 for t in self.executor)

    def executor_median(self, rate: Callable[[WorkloadTiming], float]) -> float:
        return statistics.median(rate(t) for t in self.executor)

    def llama_median(self, rate: Callable[[WorkloadTiming], float]) -> float:
        return statistics.median(rate(t) for t in self.llama)


@dataclass(frozen=True, slots=True)
class LlamaComparison:
    """A whole comparison on one model file."""

    model: str
    workload: Workload
    tool: str
    libraries: str  # the folder both sides loaded libllama from ("" where the executor's own)
    executor_layout: str
    rounds: int
    sizes: tuple[SizeComparison, ...]

    def size(self, conversations: int) -> SizeComparison | None:
        return next((s for s in self.sizes if s.conversations == conversations), None)


def find_tool(given: str | None) -> Path:
    """``llama-batched-bench``: the file given, or in the folder given, or on PATH."""
    if given:
        path = Path(given).expanduser()
        if path.is_dir():
            path = path / TOOL
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise LlamaToolMissing(f"no executable {TOOL} at {given} — {HOW_TO_BUILD}")
    found = shutil.which(TOOL)
    if found is None:
        raise LlamaToolMissing(f"{TOOL} is not on PATH — {HOW_TO_BUILD}")
    return Path(found)


def shared_libraries(tool: Path) -> Path | None:
    """The folder holding the libllama the tool links, where it is a shared build (CMake puts
    them beside the binaries); None for a static build."""
    folder = tool.resolve().parent
    return folder if any(folder.glob("libllama.so*")) else None


def run_llama(tool: Path, model: str, workload: Workload) -> list[WorkloadTiming]:
    """One run of the C++ tool over every batch size, parsed from its JSON lines."""
    command = [
        str(tool),
        "-m",
        model,
        "-c",
        str(workload.n_ctx),
        "-b",
        "512",
        "-ub",
        "512",
        "-npp",
        str(workload.prompt_tokens),
        "-ntg",
        str(workload.generated_tokens),
        "-npl",
        ",".join(map(str, workload.sizes)),
        "-kvu",
        # The executor keeps every cell of sliding-window layers (llama.cpp's context default,
        # swa_full): rewinds and branches need them. llama.cpp's tools keep only the window
        # unless told; without this Gemma 3's long prompts attend over fewer cells there.
        "--swa-full",
        "-t",
        str(workload.threads),
        "--output-format",
        "jsonl",
    ]
    return [WorkloadTiming.from_batched_bench(line) for line in _run(command, os.environ.copy())]


def run_executor(
    model: str, workload: Workload, libraries: Path | None, layout: str
) -> tuple[list[WorkloadTiming], str]:
    """The same workload on the executor, in a child process on the tool's libraries; also
    the weight layout that load used."""
    command = [
        sys.executable,
        "-m",
        "core.bench.decode_workload",
        "--model",
        model,
        "--sizes",
        ",".join(map(str, workload.sizes)),
        "--pp",
        str(workload.prompt_tokens),
        "--tg",
        str(workload.generated_tokens),
        "--n-ctx",
        str(workload.n_ctx),
        "--threads",
        str(workload.threads),
        "--weight-layout",
        layout,
    ]
    env = os.environ.copy()
    if libraries is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(libraries)
    lines = _run(command, env)
    timings = [WorkloadTiming.from_json(line) for line in lines]
    return timings, str(lines[0]["layout"]) if lines else ""


def _run(command: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    """Run a side; its JSON lines, or a PanechatError carrying the end of what it printed."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise PanechatError(f"{Path(command[0]).name} ran past {TIMEOUT_SECONDS} s") from None
    lines = [json.loads(s) for s in done.stdout.splitlines() if s.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PanechatError(
            f"{' '.join(command[:3])} … failed (exit {done.returncode}): {' / '.join(tail)}"
        )
    return lines


def compare(
    tool: Path,
    model: str,
    workload: Workload,
    rounds: int,
    layout: str,
    progress: Callable[[str], None] = lambda _: None,
) -> LlamaComparison:
    """``rounds`` rounds; in each, every batch size is one pair of runs back to back, the side
    that goes first alternating from pair to pair. A pair's two runs are minutes apart at
    most, so its ratio holds up where the machine drifts (figures of one size were seen 30%
    apart from one round to the next on a shared host)."""
    libraries = shared_libraries(tool)
    executor_runs: dict[int, list[WorkloadTiming]] = {n: [] for n in workload.sizes}
    llama_runs: dict[int, list[WorkloadTiming]] = {n: [] for n in workload.sizes}
    executor_layout = ""
    pair = 0
    for i in range(rounds):
        for n in workload.sizes:
            one = replace(workload, sizes=(n,))
            sides = ("executor", "llama") if pair % 2 == 0 else ("llama", "executor")
            pair += 1
            for side in sides:
                progress(f"round {i + 1}/{rounds}, N={n}: {side}")
                if side == "llama":
                    llama_runs[n] += run_llama(tool, model, one)
                else:
                    timings, executor_layout = run_executor(model, one, libraries, layout)
                    executor_runs[n] += timings
    per_size = tuple(
        SizeComparison(n, tuple(executor_runs[n]), tuple(llama_runs[n])) for n in workload.sizes
    )
    return LlamaComparison(
        model,
        workload,
        str(tool),
        str(libraries or ""),
        executor_layout,
        rounds,
        per_size,
    )
