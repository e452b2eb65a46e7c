"""The comparison with llama.cpp's own llama-batched-bench (issue #27).

The executor side is real: it decodes batched-bench's batches on the embedded model, in a child
process as the bench runs it. The C++ tool itself is not built in a test run (minutes of
compiling), so the tests that drive the section's plumbing use a stand-in script that prints
the tool's JSON-lines format (copied from tools/batched-bench/batched-bench.cpp) and records
how it was called; the figures in docs/BENCHMARKS.md come from the real tool.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import llama_cpp
import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, resolve_model_path
from core.bench.__main__ import main
from core.bench.decode_workload import context_size, run_workload, workload_params
from core.bench.llama_batched_bench import (
    LlamaToolMissing,
    Workload,
    compare,
    find_tool,
    shared_libraries,
)
from core.errors import PanechatError

#: The stand-in tool: batched-bench's JSON line for each -npl size, with times that give
#: S_TG = 1000 tok/s and S_PP = 2000 tok/s; argv is appended to calls.jsonl beside it.
STAND_IN = """#!{python}
import json, sys
from pathlib import Path
argv = sys.argv[1:]
with open(Path(__file__).with_name("calls.jsonl"), "a") as calls:
    calls.write(json.dumps(argv) + "\\n")
if "{fail}" == "yes":
    print("main: error: failed to load model", file=sys.stderr)
    sys.exit(1)
value = lambda flag: argv[argv.index(flag) + 1]
pp, tg = int(value("-npp")), int(value("-ntg"))
for pl in map(int, value("-npl").split(",")):
    t_pp, t_tg = pl * pp / 2000, pl * tg / 1000
    print("llama_model_loader: noise the real tool prints")
    print(json.dumps({{"n_kv_max": int(value("-c")), "n_batch": 512, "n_ubatch": 512,
        "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": 0, "n_threads": 2,
        "n_threads_batch": 2, "pp": pp, "tg": tg, "pl": pl, "n_kv": pl * (pp + tg),
        "t_pp": t_pp, "speed_pp": pl * pp / t_pp, "t_tg": t_tg, "speed_tg": pl * tg / t_tg,
        "t": t_pp + t_tg, "speed": pl * (pp + tg) / (t_pp + t_tg)}}))
"""


def stand_in_tool(folder: Path, *, fail: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "llama-batched-bench"
    tool.write_text(STAND_IN.format(python=sys.executable, fail="yes" if fail else "no"))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def calls(tool: Path) -> list[list[str]]:
    lines = tool.with_name("calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_workload_decodes_batched_benchs_batches(weights: LlamaWeights) -> None:
    """All prompts in as few n_batch-sized decodes as fit, then one decode of N tokens per
    generated token; every chat's cells and sequence are given back after."""
    params = workload_params(ContextParams(), 4096, [3])
    assert (params.n_batch, params.physical_batch, params.n_seq_max) == (512, 512, 3)
    assert params.kv_unified and not params.adapt_threads
    with BatchedExecutor(weights, params) as executor:
        timing = run_workload(executor, 3, 8, 4)
        assert executor.stats.decode_calls == 1 + 4
        assert executor.stats.tokens_decoded == 3 * 8 + 3 * 4
        assert executor.stats.last_batch_tokens == 3
        long = run_workload(executor, 2, 300, 1)  # 600 prompt tokens: 512 + 88
        assert executor.stats.decode_calls == 5 + 2 + 1
        assert executor.free_sequences == 3 and executor.tokens_in_kv == 0
    assert timing.prefill_seconds > 0 and timing.generate_seconds > 0
    assert 0 < (timing.generate_decode_seconds or 0) < timing.generate_seconds
    assert 0 < (timing.outside_decode_share or 0) < 0.5  # the rest is in llama_decode
    assert timing.decode_rate == pytest.approx(12 / timing.generate_seconds)
    assert timing.prefill_rate == pytest.approx(24 / timing.prefill_seconds)
    assert long.prefill_rate == pytest.approx(600 / long.prefill_seconds)


def test_both_sides_get_the_same_context_size() -> None:
    assert context_size([1, 8], 16, 32) == 4096  # batched-bench's usual -c
    assert context_size([64], 16, 64) == 8192  # 64 x 80 cells do not fit in 4096
    assert context_size([1], 4096, 1) == 8192


def test_the_tool_is_found_where_it_is_asked_for(tmp_path: Path) -> None:
    with pytest.raises(LlamaToolMissing, match="no executable llama-batched-bench at"):
        find_tool(str(tmp_path / "nowhere"))
    tool = stand_in_tool(tmp_path / "bin")
    assert find_tool(str(tool)) == tool
    assert find_tool(str(tool.parent)) == tool
    assert shared_libraries(tool) is None  # no libllama beside it: a static build


def test_comparison_alternates_sides_and_runs_the_executor_on_the_tools_libraries(
    tmp_path: Path,
) -> None:
    """The tool gets batched-bench's flags for the workload; rounds alternate which side goes
    first; the executor's child process loads libllama from the tool's folder."""
    folder = tmp_path / "build" / "bin"
    tool = stand_in_tool(folder)
    own = Path(llama_cpp.__file__).parent / "lib"
    for library in own.iterdir():  # a shared build keeps its libraries beside the tools
        os.symlink(library, folder / library.name)
    assert shared_libraries(tool) == folder.resolve()
    workload = Workload((1, 2), 8, 4, 4096, 2)
    steps: list[str] = []
    result = compare(tool, str(resolve_model_path(None)), workload, 2, "auto", steps.append)
    assert steps == [  # each size a pair of runs back to back, the first side alternating
        "round 1/2, N=1: executor",
        "round 1/2, N=1: llama",
        "round 1/2, N=2: llama",
        "round 1/2, N=2: executor",
        "round 2/2, N=1: executor",
        "round 2/2, N=1: llama",
        "round 2/2, N=2: llama",
        "round 2/2, N=2: executor",
    ]
    argv = calls(tool)[1]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("-c") == "4096" and flag("-npp") == "8" and flag("-ntg") == "4"
    assert flag("-npl") == "2" and flag("-t") == "2" and "-kvu" in argv and "--swa-full" in argv
    assert flag("-b") == flag("-ub") == "512" and flag("--output-format") == "jsonl"
    assert result.libraries == str(folder.resolve()) and result.executor_layout
    for size in result.sizes:
        assert len(size.executor) == len(size.llama) == 2
        assert all(t.generate_seconds > 0 for t in size.executor)
        # The stand-in generates at 1000 tok/s, so the ratio is the executor's own rate.
        ours = sorted(t.decode_rate / 1000 for t in size.executor)
        assert size.decode_ratio == pytest.approx(sum(ours) / 2)
        assert size.decode_ratio_range == pytest.approx((ours[0], ours[1]))
        assert 0 < size.outside_decode_share < 0.5
        assert size.llama[0].decode_rate == pytest.approx(1000)


def test_a_failing_tool_is_one_line_and_the_bench_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = stand_in_tool(tmp_path / "bin", fail=True)
    workload = Workload((1,), 8, 2, 4096, 2)
    with pytest.raises(PanechatError, match="failed to load model"):
        compare(tool, str(resolve_model_path(None)), workload, 1, "auto")
    out = tmp_path / "bench.json"
    argv = ["--sections", "llama", "--llama-bin", str(tool), "--synthetic", "tiny"]
    assert main([*argv, "--tokens", "2", "--prefill", "", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("failed (exit 1): main: error: failed to load model") == 2


def test_the_section_without_the_tool_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--sections", "llama", "--llama-bin", str(tmp_path / "nowhere")]
    assert main([*argv, "--json", str(out)]) == 0
    assert "Skipped: no executable llama-batched-bench" in capsys.readouterr().out
    assert "docs/BENCHMARKS.md" in json.loads(out.read_text())["llama"]["skipped"]


def test_the_section_prints_each_ratio_against_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the embedded model and a tiny synthetic one: S_TG and S per batch size, S_PP per
    long prompt, and the verdict (the stand-in is far faster than any real decode)."""
    tool = stand_in_tool(tmp_path / "bin")
    out = tmp_path / "bench.json"
    argv = ["--sections", "llama", "--llama-bin", str(tool), "--synthetic", "tiny"]
    argv += ["--llama-concurrency", "1,8", "--tokens", "3", "--prefill", "64", "--rounds", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("S_TG ours") == 2 and printed.count("S_PP ours") == 2
    assert "not met (N=1 S_TG, N=1 S, N=8 S_TG, N=8 S)" in printed
    assert printed.count("S_TG at N=8 over N=1:") == 2
    assert "x llama-batched-bench's own (medians)" in printed
    document = json.loads(out.read_text())["llama"]
    assert len(document) == 4  # per model: the batch sizes, then the one long prompt
    assert [r["conversations"] for r in document[0]["ratios"]] == [1, 8]
    assert 0 < document[0]["ratios"][0]["decode_ratio"] < 0.98
    assert document[1]["comparison"]["workload"]["prompt_tokens"] == 64
