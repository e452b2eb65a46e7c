"""Trying llama.cpp's AMX kernels where a crash cannot hurt, and remembering the verdict.

On some Intel CPUs with AMX (cloud VMs above all) llama.cpp's AMX matmul kills the process,
while the CPU flags and the kernel's AMX permission look fine: only a trial tells. The trial is
a short decode of the embedded model with AMX allowed, in a child process
(``python -m core.amx_trial``); its verdict is stored per CPU and llama.cpp build in the user
cache dir, so each machine pays for it once (about two seconds).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from core.machine import cpu_name

logger = logging.getLogger("panechat.amx_trial")

#: Seconds a trial may take: loading and a few decodes of a 270M model take ~2 s on 2 cores.
TRIAL_TIMEOUT = 120.0
#: Exit statuses of a shell-wrapped child killed by a signal (128 + signal number).
_FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT)


class TrialOutcome(StrEnum):
    PASSED = "passed"
    CRASHED = "crashed"  # the child died of a signal
    HUNG = "hung"  # the child did not finish in time
    INCONCLUSIVE = "inconclusive"  # the child failed for another reason; try again next time


@dataclass(frozen=True, slots=True)
class TrialVerdict:
    outcome: TrialOutcome
    detail: str  # the signal, the time limit, or the child's last error line
    when: str  # ISO date of the trial

    @property
    def remembered(self) -> bool:
        """Inconclusive trials say nothing about AMX; they are run again next time."""
        return self.outcome is not TrialOutcome.INCONCLUSIVE

    def describe(self) -> str:
        """'crashed a trial decode (SIGSEGV)' and the like."""
        if self.outcome is TrialOutcome.PASSED:
            return "passed a trial decode"
        if self.outcome is TrialOutcome.CRASHED:
            return f"crashed a trial decode ({self.detail})"
        if self.outcome is TrialOutcome.HUNG:
            return f"hung in a trial decode ({self.detail})"
        return f"could not be tried ({self.detail})"


def trial_command(model: Path | None = None) -> list[str]:
    """The child's command line: this Python, this panechat, AMX allowed."""
    return [sys.executable, "-m", "core.amx_trial", *([str(model)] if model else [])]


def run_trial(command: Sequence[str] | None = None, timeout: float = TRIAL_TIMEOUT) -> TrialVerdict:
    """Run the trial child and read its fate from how it ended."""
    today = date.today().isoformat()
    # The child imports this panechat even when it runs from a checkout that is not installed.
    here = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            list(command or trial_command()),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired:
        return TrialVerdict(TrialOutcome.HUNG, f"no answer in {timeout:g} s", today)
    except OSError as e:
        return TrialVerdict(TrialOutcome.INCONCLUSIVE, f"could not start Python: {e}", today)
    code = done.returncode
    if code == 0 and done.stdout.strip().endswith("ok"):
        return TrialVerdict(TrialOutcome.PASSED, "", today)
    killed_by = -code if code < 0 else code - 128 if code - 128 in _FATAL_SIGNALS else None
    if killed_by is not None:
        return TrialVerdict(TrialOutcome.CRASHED, _signal_name(killed_by), today)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    detail = lines[-1].strip()[:200] if lines else f"exit status {code}"
    return TrialVerdict(TrialOutcome.INCONCLUSIVE, detail, today)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def machine_key() -> str:
    """What a verdict holds for: this CPU, this llama.cpp build (a rebuild may change the
    kernels compiled in, so the CPU library's size and time are part of it)."""
    from core.ggml_registry import ggml_version, library_identity

    try:
        binding = version("llama-cpp-python")
    except PackageNotFoundError:  # pragma: no cover
        binding = "?"
    return (
        f"{cpu_name()} | llama-cpp-python {binding} | ggml {ggml_version()} | {library_identity()}"
    )


class TrialRecords:
    """Verdicts on disk, one per :func:`machine_key`: a small JSON file in the user cache."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from core.model_path import cache_dir

            path = cache_dir() / "amx-trials.json"
        self.path = path

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> TrialVerdict | None:
        entry = self._read().get(key)
        try:
            return TrialVerdict(TrialOutcome(entry["outcome"]), entry["detail"], entry["when"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None  # none, or damaged: the trial runs again

    def put(self, key: str, verdict: TrialVerdict) -> None:
        """Store a verdict; a cache that cannot be written only costs a trial next time."""
        data = self._read()
        data[key] = {k: str(v) for k, v in asdict(verdict).items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".partial")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as e:
            logger.warning("could not remember the AMX trial's verdict in %s: %s", self.path, e)


def verdict_for_this_machine(
    records: TrialRecords | None = None, run: Callable[[], TrialVerdict] = run_trial
) -> TrialVerdict:
    """The stored verdict for this CPU and build, or a fresh trial's (stored unless
    inconclusive)."""
    records = records or TrialRecords()
    key = machine_key()
    verdict = records.get(key)
    if verdict is None:
        logger.info("trying llama.cpp's AMX kernels on this CPU in a child process (once)")
        verdict = run()
        if verdict.remembered:
            records.put(key, verdict)
    return verdict


def _trial(model: str | None) -> None:
    """The child: load on the CPU with AMX allowed (no GPU layers, or AMX would hold nothing),
    prefill prompts of a few sizes (AMX tiles), then decode eight sequences step by step (AMX's
    small-batch kernels), sampling each."""
    from core.executor import BatchedExecutor
    from core.model_path import resolve_model_path
    from core.params import ContextParams
    from core.sampling import SamplingParams
    from core.weight_layout import WeightLayout
    from core.weights import LlamaWeights

    with (
        LlamaWeights.load(resolve_model_path(model), 0, WeightLayout.AMX) as weights,
        BatchedExecutor(weights, ContextParams(n_ctx=2048, n_batch=256, n_seq_max=8)) as executor,
    ):
        greedy = SamplingParams(temperature=0)
        words = "The quick brown fox jumps over the lazy dog. " * 40
        for length in (17, 64, 160):
            conv = executor.create(greedy)
            conv.prompt(weights.tokenize(words)[:length])
            executor.infer_sync()
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
    print("ok", flush=True)


if __name__ == "__main__":
    _trial(sys.argv[1] if len(sys.argv) > 1 else None)
