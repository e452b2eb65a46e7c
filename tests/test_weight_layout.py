"""Which weight layout a load uses, for every CPU build and setting; and that the choice
really reaches llama.cpp (the real model's buffers), for our loader and for llama-cpp-python's
high-level ``Llama`` the benchmark compares against."""

from __future__ import annotations

import ctypes
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import pytest

from core import InvalidParamsError, LlamaWeights, WeightLayout, resolve_model_path
from core.bench.layout import layouts_to_measure
from core.bench.throughput import open_baseline
from core.executor.params import ContextParams
from core.models.load_report import LoadReport
from core.native import native_log
from core.native.amx_trial import TrialOutcome, TrialRecords, TrialVerdict, machine_key
from core.native.ggml_registry import compacted, registry
from core.native.weight_layout import LayoutChoice, choose_layout, resolve_layout

AMX_BUILD = ("AMX", "CPU_REPACK")  # a build for an Intel CPU with AMX (-march=native)
X86_BUILD = ("CPU_REPACK",)  # AVX2 / AVX-512 without AMX
ARM_BUILD = ("CPU_KLEIDIAI", "CPU_REPACK")
BARE_BUILD: tuple[str, ...] = ()  # e.g. a GPU-only build, or repacking compiled out

DAY = date(2026, 12, 1)
PASSED = TrialVerdict(TrialOutcome.PASSED, "", DAY)
CRASHED = TrialVerdict(TrialOutcome.CRASHED, "SIGSEGV", DAY)
HUNG = TrialVerdict(TrialOutcome.HUNG, "no answer in 60 s", DAY)
FAILED = TrialVerdict(TrialOutcome.INCONCLUSIVE, "ModuleNotFoundError: numpy", DAY)


def cpu_extra_buffer_types() -> tuple[str, ...]:
    return registry().cpu_extra_buffer_types()


A, L, R, P = WeightLayout.AUTO, WeightLayout.AMX, WeightLayout.REPACK, WeightLayout.PLAIN


@pytest.mark.parametrize(
    ("requested", "offered", "verdict", "withheld", "effective", "why"),
    [
        # auto: AMX only after a passed trial; repacking kept whatever the trial said
        (A, AMX_BUILD, PASSED, (), L, "AMX passed a trial decode on this CPU on 2026-12-01"),
        (A, AMX_BUILD, CRASHED, ("AMX",), R, "AMX crashed a trial decode (SIGSEGV)"),
        (A, AMX_BUILD, HUNG, ("AMX",), R, "AMX hung in a trial decode"),
        (A, AMX_BUILD, FAILED, ("AMX",), R, "could not run (ModuleNotFoundError: numpy)"),
        (A, AMX_BUILD, None, ("AMX",), R, "not tried on this CPU yet"),
        (A, X86_BUILD, None, (), R, "this llama.cpp build has no AMX kernels"),
        (A, ARM_BUILD, None, (), R, "uses CPU_KLEIDIAI, CPU_REPACK"),
        (A, BARE_BUILD, None, (), P, "offers no repacked layouts"),
        (A, None, None, (), P, "could not read this llama.cpp build's weight layouts"),
        (L, None, None, (), P, "weights stay as stored in the file"),
        # explicit settings win over the trial's verdict
        (L, AMX_BUILD, CRASHED, (), L, "asked for; AMX is not tried first"),
        (L, X86_BUILD, None, (), R, "asked for, but this build has no AMX kernels"),
        (R, AMX_BUILD, PASSED, ("AMX",), R, "asked for, AMX kept out; uses CPU_REPACK"),
        (R, X86_BUILD, None, (), R, "asked for; uses CPU_REPACK"),
        (P, AMX_BUILD, PASSED, AMX_BUILD, P, "weights stay as stored in the file"),
        (P, X86_BUILD, None, X86_BUILD, P, "asked for"),
    ],
)
def test_choice_for_each_build_setting_and_verdict(
    requested: WeightLayout,
    offered: tuple[str, ...] | None,
    verdict: TrialVerdict | None,
    withheld: tuple[str, ...],
    effective: WeightLayout,
    why: str,
) -> None:
    choice = choose_layout(requested, offered, verdict)
    assert choice.withheld == withheld
    assert choice.effective is effective
    assert why in choice.reason
    assert choice.used == tuple(n for n in offered or () if n not in withheld)
    assert choice.needs_trial == (requested is A and "AMX" in (offered or ()))
    assert choice.verdict == (verdict if offered else None)


def test_setting_values_are_checked() -> None:
    assert WeightLayout.parse("repack") is WeightLayout.REPACK
    for bad in ("fast", "", 1, None):
        with pytest.raises(InvalidParamsError, match=r"one of 'auto', 'amx', 'repack', 'plain'"):
            WeightLayout.parse(bad)


def test_auto_on_an_amx_build_tries_once_per_machine(tmp_path: Path) -> None:
    records = TrialRecords(tmp_path / "trials.json")
    trials: list[TrialVerdict] = []

    def crashing_trial() -> TrialVerdict:
        trials.append(CRASHED)
        return CRASHED

    first = resolve_layout(A, records, crashing_trial, offered=AMX_BUILD)
    again = resolve_layout(A, records, crashing_trial, offered=AMX_BUILD)
    assert len(trials) == 1  # the second load reads the stored verdict
    assert first == again and first.withheld == ("AMX",) and first.used == ("CPU_REPACK",)
    assert records.get(machine_key()) == CRASHED
    # explicit layouts and builds without AMX never run a trial
    for requested, offered in ((R, AMX_BUILD), (L, AMX_BUILD), (P, AMX_BUILD), (A, X86_BUILD)):
        resolve_layout(requested, records, crashing_trial, offered=offered)
    assert len(trials) == 1


def _buffers(weights: LlamaWeights) -> tuple[str, ...]:
    return weights.load_report.buffer_names()


def test_plain_and_repack_reach_llama_cpp(weights: LlamaWeights) -> None:
    """The real loads: "plain" leaves nothing repacked; "repack" and "auto" (on a build without
    AMX) repack what llama.cpp can; the array llama.cpp reads is whole again afterwards."""
    offered = cpu_extra_buffer_types()
    if "CPU_REPACK" not in offered:
        pytest.skip(f"this llama.cpp build offers no CPU_REPACK (offers {offered})")
    path = resolve_model_path(None)
    with LlamaWeights.load(path, 0, WeightLayout.PLAIN) as plain:
        assert "CPU_REPACK" not in _buffers(plain) and "CPU_Mapped" in _buffers(plain)
        assert plain.layout.effective is WeightLayout.PLAIN
    with LlamaWeights.load(path, 0, WeightLayout.REPACK) as repacked:
        assert "CPU_REPACK" in _buffers(repacked)
        assert "AMX" not in _buffers(repacked)
    assert "CPU_REPACK" in _buffers(weights)  # the session's default (auto) load
    assert cpu_extra_buffer_types() == offered
    # a plain model decodes like any other
    with LlamaWeights.load(path, 0, WeightLayout.PLAIN) as plain:
        assert plain.detokenize(plain.tokenize("Paris")) == "Paris"


def test_compacting_moves_the_kept_entries_to_the_front() -> None:
    """The AMX build's case, which x86 CI cannot load: AMX in slot 0, CPU_REPACK after it."""
    entries = [("AMX", 0x1000), ("CPU_KLEIDIAI", 0x2000), ("CPU_REPACK", 0x3000)]
    assert compacted(entries, {"AMX"}) == [0x2000, 0x3000, None]
    assert compacted(entries, {"CPU_KLEIDIAI"}) == [0x1000, 0x3000, None]
    assert compacted(entries, {"AMX", "CPU_REPACK", "CPU_KLEIDIAI"}) == [None, None, None]
    assert compacted(entries, set()) == [0x1000, 0x2000, 0x3000]
    # written into a null-terminated array the way the registry writes llama.cpp's
    array = (ctypes.c_void_p * 4)(0x1000, 0x2000, 0x3000, None)
    for i, pointer in enumerate(compacted(entries, {"AMX"})):
        array[i] = pointer
    assert list(array) == [0x2000, 0x3000, None, None]


def test_withholding_hides_buffer_types_only_inside_the_block() -> None:
    build = registry()
    offered = build.cpu_extra_buffer_types()
    if not offered:
        pytest.skip("this llama.cpp build offers no extra buffer types")
    with build.withholding_cpu_buffer_types({offered[0]}):
        assert build.cpu_extra_buffer_types() == offered[1:]
        with build.withholding_cpu_buffer_types(offered):
            assert build.cpu_extra_buffer_types() == ()
        assert build.cpu_extra_buffer_types() == offered[1:]
    assert build.cpu_extra_buffer_types() == offered
    with pytest.raises(RuntimeError), build.withholding_cpu_buffer_types(offered):
        raise RuntimeError("a failed load")
    assert build.cpu_extra_buffer_types() == offered


def test_a_withheld_type_that_still_gets_weights_switches_all_repacking_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net: if withholding ever stops reaching llama.cpp (a future ggml copying its
    list, say), the load notices from its buffers and loads again with every layout off."""
    offered = cpu_extra_buffer_types()
    if "CPU_REPACK" not in offered:
        pytest.skip("this llama.cpp build offers no CPU_REPACK")
    monkeypatch.setattr("core.models.weights.withholding", lambda _choice: nullcontext())
    # Every layout the build offers is "withheld", so whichever llama.cpp fills (AMX before
    # CPU_REPACK on an AMX build) leaks; nothing is decoded, so AMX cannot crash here.
    pretend = LayoutChoice(R, (*offered, "OTHER"), offered, "a test")
    with LlamaWeights.load(resolve_model_path(None), 0, pretend) as loaded:
        assert not set(offered) & set(_buffers(loaded))
        assert loaded.layout.effective is WeightLayout.PLAIN
        assert "anyway, so none is used" in loaded.layout.reason


def test_the_benchmark_baseline_loads_with_the_same_layout(weights: LlamaWeights) -> None:
    """llama-cpp-python's ``Llama`` has no layout setting; the benchmark loads it under the
    same choice as our weights (else it would crash on AMX, or compare unlike with unlike)."""
    if "CPU_REPACK" not in cpu_extra_buffer_types():
        pytest.skip("this llama.cpp build offers no CPU_REPACK")
    path = str(resolve_model_path(None))
    params = ContextParams(n_batch=64, n_seq_max=1)
    for layout, repacked in ((WeightLayout.PLAIN, False), (WeightLayout.REPACK, True)):
        choice = choose_layout(layout, cpu_extra_buffer_types())
        with native_log.capture() as log:
            llm = open_baseline(path, params, choice)
        llm.close()
        assert ("CPU_REPACK" in LoadReport.from_log(log).buffer_names()) == repacked


def test_the_benchmark_measures_amx_only_where_it_was_chosen() -> None:
    assert layouts_to_measure(choose_layout(A, AMX_BUILD, PASSED)) == [P, R, L]
    assert layouts_to_measure(choose_layout(A, AMX_BUILD, CRASHED)) == [P, R]
    assert layouts_to_measure(choose_layout(A, X86_BUILD)) == [P, R]
    assert layouts_to_measure(choose_layout(A, BARE_BUILD)) == [P]


def test_load_report_reads_llama_cpp_lines() -> None:
    report = LoadReport.from_log(
        [
            "load_tensors: offloading output layer to GPU",
            "load_tensors: offloaded 19/19 layers to GPU",
            "load_tensors:   CPU_Mapped model buffer size =   235.16 MiB",
            "load_tensors:        CUDA0 model buffer size =    12.50 MiB",
        ]
    )
    assert report.buffer_names() == ("CPU_Mapped", "CUDA0")
    assert report.buffers[0].mib == 235.16
    assert (report.layers_offloaded, report.layers_total) == (19, 19)
    assert LoadReport.from_log([]) == LoadReport()
