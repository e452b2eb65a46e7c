"""Trying llama.cpp's AMX kernels where a crash cannot hurt, and remembering the verdict.

On some Intel CPUs with AMX (cloud VMs above all) llama.cpp's AMX matmul kills the process,
while the CPU flags and the kernel's AMX permission look fine: only a trial tells. The trial is
a short decode of the embedded model with AMX allowed, in a child process
(:mod:`core.native.amx_probe`). If that child dies, a control child runs the same decode with AMX
kept out: only when the control passes is AMX to blame. The verdict is stored per CPU, kernel
and llama.cpp build in the user cache dir, so each machine pays for it once (about 2 s).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.native.atomic_file import replacing
from core.native.machine import cpu_flags, cpu_name, distribution_version

logger = logging.getLogger("panechat.amx_trial")

#: Seconds a trial child may take: loading and a few decodes of a 270M model take ~2 s on 2
#: cores, so this only catches a child that will never answer.
TRIAL_TIMEOUT = 60.0
#: Signals that mean the native code faulted (not that someone stopped the child).
FATAL_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT}
)


class TrialOutcome(StrEnum):
    """How a trial ended; only PASSED, CRASHED and HUNG say something about AMX."""

    PASSED = "passed"
    CRASHED = "crashed"  # the child died of a fault, and the control without AMX did not
    HUNG = "hung"  # the child never answered, and the control without AMX did
    INCONCLUSIVE = "inconclusive"  # anything else; tried again next time


@dataclass(frozen=True, slots=True)
class TrialVerdict:
    outcome: TrialOutcome
    detail: str  # the signal, the time limit, or the child's last error line
    when: date

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


def killing_signal(returncode: int) -> signal.Signals | None:
    """The signal that ended a child: a negative status, or 128 + N as a shell reports it."""
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None


def probe_command(layout: str = "amx") -> list[str]:
    """The child's command line: this Python and this panechat, decoding with ``layout``."""
    return [sys.executable, "-m", "core.native.amx_probe", "--layout", layout]


def _child_env() -> dict[str, str]:
    """The child imports this panechat, also from a checkout that is not installed (an
    installed one is on the path already; adding site-packages would shadow the stdlib)."""
    here = Path(__file__).resolve().parents[2]
    if here.name in ("site-packages", "dist-packages"):
        return dict(os.environ)
    path = os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _run_child(command: Sequence[str], timeout: float) -> TrialVerdict:
    today = date.today()
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        return TrialVerdict(TrialOutcome.HUNG, f"no answer in {timeout:g} s", today)
    except OSError as e:
        return TrialVerdict(TrialOutcome.INCONCLUSIVE, f"could not start Python: {e}", today)
    if done.returncode == 0 and done.stdout.strip().endswith("ok"):
        return TrialVerdict(TrialOutcome.PASSED, "", today)
    killed_by = killing_signal(done.returncode)
    if killed_by in FATAL_SIGNALS:
        return TrialVerdict(TrialOutcome.CRASHED, killed_by.name, today)
    if killed_by is not None:
        return TrialVerdict(TrialOutcome.INCONCLUSIVE, f"stopped by {killed_by.name}", today)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    detail = lines[-1].strip()[:200] if lines else f"exit status {done.returncode}"
    return TrialVerdict(TrialOutcome.INCONCLUSIVE, detail, today)


def run_trial(
    command: Sequence[str] | None = None,
    control: Sequence[str] | None = None,
    timeout: float = TRIAL_TIMEOUT,
) -> TrialVerdict:
    """Decode with AMX in a child; if it dies or hangs, decode without AMX in another: AMX is
    blamed only when that control passes (else the fault lies elsewhere: inconclusive)."""
    verdict = _run_child(command or probe_command("amx"), timeout)
    if verdict.outcome in (TrialOutcome.CRASHED, TrialOutcome.HUNG):
        check = _run_child(control or probe_command("repack"), timeout)
        if check.outcome is not TrialOutcome.PASSED:
            return TrialVerdict(
                TrialOutcome.INCONCLUSIVE,
                f"the decode {verdict.outcome} with AMX and {check.outcome} without it "
                f"({check.detail or verdict.detail})",
                verdict.when,
            )
    return verdict


def machine_key() -> str:
    """What a verdict holds for: this CPU (name and AMX flags), kernel, and llama.cpp build (a
    rebuild may compile other kernels in, so the CPU library's size and time are part of it)."""
    from core.native.ggml_registry import registry

    amx = ",".join(sorted(flag for flag in cpu_flags() if flag.startswith("amx")))
    build = registry()
    return " | ".join(
        (
            f"{cpu_name()} [{amx or 'no amx flags'}]",
            f"{platform.system()} {platform.release()}",
            f"llama-cpp-python {distribution_version('llama-cpp-python')}",
            f"ggml {build.ggml_version()}",
            build.cpu_library_identity(),
        )
    )


class TrialRecords:
    """Verdicts on disk, one per :func:`machine_key`: a small JSON file in the user cache.
    Two processes trying at once both run a trial; the last to write keeps its verdict."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from core.models.model_path import cache_dir

            path = cache_dir() / "amx-trials.json"
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> TrialVerdict | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            return TrialVerdict(
                TrialOutcome(entry["outcome"]),
                str(entry["detail"]),
                date.fromisoformat(entry["when"]),
            )
        except (KeyError, ValueError, TypeError):
            return None  # damaged: the trial runs again

    def _write(self, data: dict[str, Any]) -> None:
        """A cache that cannot be written only costs a trial next time."""
        try:
            with replacing(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        except OSError as e:
            logger.warning("could not remember the AMX trial's verdict in %s: %s", self.path, e)

    def put(self, key: str, verdict: TrialVerdict) -> None:
        data = self._read()
        data[key] = {
            "outcome": str(verdict.outcome),
            "detail": verdict.detail,
            "when": verdict.when.isoformat(),
        }
        self._write(data)

    def forget(self, key: str) -> None:
        """Drop a verdict, so that the next load tries AMX again (``doctor --retry-amx``)."""
        data = self._read()
        if data.pop(key, None) is not None:
            self._write(data)


def verdict_for_this_machine(
    records: TrialRecords | None = None, run: Callable[[], TrialVerdict] = run_trial
) -> TrialVerdict:
    """The stored verdict for this machine, or a fresh trial's (stored unless inconclusive)."""
    records = records or TrialRecords()
    key = machine_key()
    verdict = records.get(key)
    if verdict is None:
        logger.info("trying llama.cpp's AMX kernels on this CPU in a child process (once)…")
        verdict = run()
        if verdict.remembered:
            records.put(key, verdict)
    return verdict
