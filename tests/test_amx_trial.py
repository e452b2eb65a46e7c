"""The AMX trial: a child process whose fate is the verdict, remembered per machine.

The crashing and hanging children are real processes that die the way llama.cpp's AMX matmul
kills one (SIGSEGV, SIGILL) or never answer; the passing one is the real trial, which loads
the embedded model with every layout this build offers and decodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.amx_trial import (
    TrialOutcome,
    TrialRecords,
    TrialVerdict,
    machine_key,
    run_trial,
    trial_command,
    verdict_for_this_machine,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_real_trial_decodes_and_passes() -> None:
    verdict = run_trial(trial_command())
    assert verdict.outcome is TrialOutcome.PASSED, verdict
    assert verdict.remembered and verdict.describe() == "passed a trial decode"


@pytest.mark.parametrize("name", ["SIGSEGV", "SIGILL"])
def test_a_child_killed_by_a_signal_is_a_crash(name: str) -> None:
    verdict = run_trial(python(f"import os, signal; os.kill(os.getpid(), signal.{name})"))
    assert verdict.outcome is TrialOutcome.CRASHED
    assert verdict.detail == name
    assert verdict.describe() == f"crashed a trial decode ({name})"


def test_a_shell_reporting_a_signal_is_a_crash() -> None:
    verdict = run_trial(["sh", "-c", "exit 139"])  # 128 + SIGSEGV, as a wrapper reports it
    assert (verdict.outcome, verdict.detail) == (TrialOutcome.CRASHED, "SIGSEGV")


def test_a_child_that_never_answers_is_hung() -> None:
    verdict = run_trial(python("import time; time.sleep(30)"), timeout=1)
    assert verdict.outcome is TrialOutcome.HUNG and verdict.detail == "no answer in 1 s"


def test_a_child_that_fails_otherwise_says_nothing_about_amx() -> None:
    verdict = run_trial(python("import sys; sys.exit('no model here')"))
    assert verdict.outcome is TrialOutcome.INCONCLUSIVE
    assert verdict.detail == "no model here" and not verdict.remembered
    assert run_trial(python("print('not the word')")).outcome is TrialOutcome.INCONCLUSIVE


def test_records_round_trip_and_survive_damage(tmp_path: Path) -> None:
    records = TrialRecords(tmp_path / "cache" / "trials.json")
    assert records.get("cpu") is None  # no file yet
    crashed = TrialVerdict(TrialOutcome.CRASHED, "SIGILL", "2026-12-01")
    records.put("cpu", crashed)
    records.put("other cpu", TrialVerdict(TrialOutcome.PASSED, "", "2026-11-30"))
    assert records.get("cpu") == crashed
    assert TrialRecords(records.path).get("other cpu") is not None  # read back from disk
    records.path.write_text("{not json")
    assert records.get("cpu") is None  # damaged: the trial simply runs again
    records.path.write_text(json.dumps({"cpu": {"outcome": "melted"}}))
    assert records.get("cpu") is None


def test_an_unwritable_cache_path_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    records = TrialRecords(blocker / "trials.json")  # its folder is a file: cannot be made
    records.put("cpu", TrialVerdict(TrialOutcome.PASSED, "", "2026-12-01"))
    assert records.get("cpu") is None


def test_the_verdict_is_reused_and_an_inconclusive_one_is_not(tmp_path: Path) -> None:
    records = TrialRecords(tmp_path / "trials.json")
    runs: list[str] = []

    def failing() -> TrialVerdict:
        runs.append("failing")
        return run_trial(python("raise SystemExit('broken install')"))

    def crashing() -> TrialVerdict:
        runs.append("crashing")
        return run_trial(python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))

    assert verdict_for_this_machine(records, failing).outcome is TrialOutcome.INCONCLUSIVE
    assert verdict_for_this_machine(records, crashing).outcome is TrialOutcome.CRASHED
    assert verdict_for_this_machine(records, crashing).outcome is TrialOutcome.CRASHED
    assert runs == ["failing", "crashing"]
    key = machine_key()
    assert records.get(key) is not None and "llama-cpp-python" in key and "ggml" in key
