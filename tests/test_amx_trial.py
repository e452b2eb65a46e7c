"""The AMX trial: a child process whose fate is the verdict, checked against a control child
without AMX, and remembered per machine.

The crashing and hanging children are real processes that die the way llama.cpp's AMX matmul
kills one (SIGSEGV, SIGILL) or never answer; the probe children are the real trial, which load
the embedded model and decode.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import date
from pathlib import Path

import pytest

from core.native.amx_trial import (
    TrialOutcome,
    TrialRecords,
    TrialVerdict,
    killing_signal,
    machine_key,
    probe_command,
    run_trial,
    verdict_for_this_machine,
)
from core.native.ggml_registry import registry

DAY = date(2026, 12, 1)
PASSES = [sys.executable, "-c", "print('ok')"]


def dies_of(name: str) -> list[str]:
    """A child killed by signal ``name``. Its default action is restored first: a shell runs
    a background job with SIGINT ignored, and the child would inherit that and exit 0."""
    restore = "" if name == "SIGKILL" else f"signal.signal(signal.{name}, signal.SIG_DFL); "
    kill = f"os.kill(os.getpid(), signal.{name})"
    return [sys.executable, "-c", f"import os, signal; {restore}{kill}"]


def test_the_real_probe_decodes_with_and_without_amx() -> None:
    """Without AMX in the build (x86 CI) both probes are plain decodes and pass; with it, the
    trial must reach a verdict about AMX, whatever it is."""
    control = run_trial(probe_command("repack"))
    assert control.outcome is TrialOutcome.PASSED, control
    verdict = run_trial()
    if "AMX" in registry().cpu_extra_buffer_types():
        assert verdict.outcome is not TrialOutcome.INCONCLUSIVE, verdict
    else:
        assert verdict.outcome is TrialOutcome.PASSED, verdict


@pytest.mark.parametrize("name", ["SIGSEGV", "SIGILL", "SIGBUS", "SIGABRT"])
def test_a_fault_only_with_amx_is_a_crash(name: str) -> None:
    verdict = run_trial(dies_of(name), control=PASSES)
    assert (verdict.outcome, verdict.detail) == (TrialOutcome.CRASHED, name)
    assert verdict.remembered and verdict.describe() == f"crashed a trial decode ({name})"


def test_a_fault_without_amx_too_is_not_blamed_on_amx() -> None:
    verdict = run_trial(dies_of("SIGSEGV"), control=dies_of("SIGSEGV"))
    assert verdict.outcome is TrialOutcome.INCONCLUSIVE and not verdict.remembered
    assert verdict.detail == "the decode crashed with AMX and crashed without it (SIGSEGV)"


@pytest.mark.parametrize("name", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_child_stopped_from_outside_says_nothing_about_amx(name: str) -> None:
    verdict = run_trial(dies_of(name), control=PASSES)
    assert verdict.outcome is TrialOutcome.INCONCLUSIVE and verdict.detail == f"stopped by {name}"


def test_exit_statuses_name_their_signal() -> None:
    assert killing_signal(-11) is signal.SIGSEGV
    assert killing_signal(128 + 4) is signal.SIGILL  # as a shell reports it
    assert killing_signal(0) is None and killing_signal(2) is None
    verdict = run_trial(["sh", "-c", "exit 139"], control=PASSES)
    assert (verdict.outcome, verdict.detail) == (TrialOutcome.CRASHED, "SIGSEGV")


def test_a_hang_is_blamed_on_amx_only_if_the_control_answers() -> None:
    sleeps = [sys.executable, "-c", "import time; time.sleep(30)"]
    # The control must answer within the same limit: far above a Python start on an idle
    # machine, for a busy one.
    verdict = run_trial(sleeps, control=PASSES, timeout=3)
    assert verdict.outcome is TrialOutcome.HUNG and verdict.detail == "no answer in 3 s"
    assert run_trial(sleeps, control=sleeps, timeout=3).outcome is TrialOutcome.INCONCLUSIVE


def test_a_child_that_fails_otherwise_says_nothing_about_amx() -> None:
    verdict = run_trial([sys.executable, "-c", "import sys; sys.exit('no model here')"])
    assert verdict.outcome is TrialOutcome.INCONCLUSIVE
    assert verdict.detail == "no model here" and not verdict.remembered
    assert run_trial([sys.executable, "-c", "print('no')"]).outcome is TrialOutcome.INCONCLUSIVE


def test_records_round_trip_and_survive_damage(tmp_path: Path) -> None:
    records = TrialRecords(tmp_path / "cache" / "trials.json")
    assert records.get("cpu") is None  # no file yet
    crashed = TrialVerdict(TrialOutcome.CRASHED, "SIGILL", DAY)
    records.put("cpu", crashed)
    records.put("other cpu", TrialVerdict(TrialOutcome.PASSED, "", DAY))
    assert records.get("cpu") == crashed
    assert TrialRecords(records.path).get("other cpu") is not None  # read back from disk
    assert [p.name for p in records.path.parent.iterdir()] == ["trials.json"]  # no leftovers
    records.forget("cpu")
    assert records.get("cpu") is None and records.get("other cpu") is not None
    records.path.write_text("{not json")
    assert records.get("other cpu") is None  # damaged: the trial simply runs again
    for entry in ({"outcome": "melted"}, "passed", {"outcome": "passed", "when": "soon"}):
        records.path.write_text(json.dumps({"cpu": entry}))
        assert records.get("cpu") is None


def test_an_unwritable_cache_costs_only_a_trial(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    records = TrialRecords(blocker / "trials.json")  # its folder is a file: cannot be made
    records.put("cpu", TrialVerdict(TrialOutcome.PASSED, "", DAY))  # logged, not raised
    assert records.get("cpu") is None


def test_the_verdict_is_reused_and_an_inconclusive_one_is_not(tmp_path: Path) -> None:
    records = TrialRecords(tmp_path / "trials.json")
    runs: list[str] = []

    def failing() -> TrialVerdict:
        runs.append("failing")
        return run_trial([sys.executable, "-c", "raise SystemExit('broken install')"])

    def crashing() -> TrialVerdict:
        runs.append("crashing")
        return run_trial(dies_of("SIGSEGV"), control=PASSES)

    assert verdict_for_this_machine(records, failing).outcome is TrialOutcome.INCONCLUSIVE
    assert verdict_for_this_machine(records, crashing).outcome is TrialOutcome.CRASHED
    assert verdict_for_this_machine(records, crashing).outcome is TrialOutcome.CRASHED
    assert runs == ["failing", "crashing"]
    key = machine_key()
    assert records.get(key) is not None
    for part in ("llama-cpp-python", "ggml", "ggml-cpu"):
        assert part in key
