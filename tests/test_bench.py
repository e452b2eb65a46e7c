"""The benchmark itself runs end to end (tiny sizes) on the real model and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, WeightLayout, resolve_model_path
from core.bench.__main__ import BenchContext, layout_section, main, one_core_ceiling
from core.bench.branches import measure_branch_switch
from core.bench.busy import measure_busy, measure_busy_engine
from core.bench.fairness import measure_fairness
from core.bench.models import SLOW, FrameRecorder, measure_models
from core.bench.sampling_cost import measure_sampling_cost
from core.bench.shared_prefix import measure_shared_prefix
from core.bench.synthetic_model import LLAMA_1B
from core.chat import DEFAULT, ChatDelta, Frame
from core.chat.frames import FrameStats
from core.text.reply_stream import StopReason
from tui.app_bench import app_section
from tui.cli import main as cli_main


def test_throughput_section_compares_both_ways_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--concurrency", "1,2", "--tokens", "6", "--sections", "throughput"]
    assert main([*argv, "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    rows = document["throughput"]
    assert [r["conversations"] for r in rows] == [1, 2]
    for row in rows:
        for way in ("baseline", "batched"):
            assert 0 < row[way]["tokens"] <= 6 * row["conversations"]
            assert row[way]["tokens_per_second"] > 0
        assert 0 < row["batched"]["decode_share"] <= 1
        assert row["ratio"] > 0
        assert row["full_length_greedy_tokens_per_second"] > 0
        assert row["full_length_sampled_tokens_per_second"] > 0
        assert row["sampled_ratio"] > 0
        # Greedy, same weights and prompts: the texts agree (the batched kernels may differ
        # from the single-sequence ones in the last bits, but not in 6 tokens).
        assert row["same_text"] == row["conversations"]
    assert document["machine"]["cores_available"] >= 1


def test_bench_rejects_bad_arguments_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--concurrency", "two"])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_fairness_measures_gaps_before_and_during_a_long_prompt(weights: LlamaWeights) -> None:
    result = measure_fairness(
        weights,
        ContextParams(n_ctx=2048),
        max_frame_stretch=1.5,
        generators=2,
        long_prompt_tokens=200,
        normal_frames=5,
        warm_frames=3,
    )
    assert 0 < result.normal_gap_median <= result.normal_gap_max
    assert 0 < result.during_gap_median <= result.during_gap_max
    assert result.long_prompt_ttft > 0 and result.max_gap_ratio > 0


def test_models_section_takes_the_models_in_turn(weights: LlamaWeights) -> None:
    """A chat on the default model while a second model serves two chats: between two of its
    tokens the second model decodes at most one frame (the figures are timed, the order is
    not, so the order is what is checked)."""
    result = measure_models(
        weights, str(resolve_model_path(None)), ContextParams(), slow_chats=2, tokens=8
    )
    assert result.slow_frames_between == 1
    assert 0 < result.fast_gap_alone_median <= result.fast_gap_alone_max
    assert result.slow_frame_alone_median > 0 and result.fast_gap_together_median > 0


def test_app_section_streams_every_pane_and_times_key_presses(weights: LlamaWeights) -> None:
    ctx = BenchContext(weights, str(resolve_model_path(None)), ContextParams(n_ctx=2048), 24)
    results = app_section(ctx, panes=2, intervals=(0.25,), repeats=1)
    assert [r.sampling for r in results] == ["greedy", "pane defaults"]
    for result in results:
        assert result.update_interval == 0.25
        assert 0 < result.tokens <= 2 * 24
        assert result.app_tokens_per_second > 0 and result.engine_tokens_per_second > 0
        assert result.executor_tokens_per_second > 0 and result.share_of_executor > 0
        assert result.share_of_greedy_executor > 0
        assert result.key_presses >= 1
        assert 0 < result.key_latency_median <= result.key_latency_max


def test_sampling_cost_compares_with_the_whole_row_chain(weights: LlamaWeights) -> None:
    results = measure_sampling_cost(weights, ContextParams(), draws=5, rounds=1)
    assert {r.prefilter for r in results} == {"argmax", "top-k", "min-p", "top-p"}
    assert all(r.ours_ms > 0 and r.whole_row_ms > 0 and r.with_odds_ms > 0 for r in results)


def test_busy_section_measures_idle_and_busy_both_ways(weights: LlamaWeights) -> None:
    fixed, one, adapting = measure_busy(
        weights, ContextParams(n_ctx=2048, n_threads=2), 2, 8, rounds=1
    )
    assert [(r.adapt_threads, r.threads) for r in (fixed, one, adapting)] == [
        (False, 2),
        (False, 1),
        (True, 2),
    ]
    for result in (fixed, one, adapting):
        assert result.idle_tokens_per_second > 0 and result.busy_tokens_per_second > 0
        assert 1 <= result.busy_threads <= result.threads
    assert (fixed.busy_threads, one.busy_threads) == (2, 1)
    ceiling = one_core_ceiling([fixed, one, adapting])
    assert ceiling == adapting.busy_tokens_per_second / one.idle_tokens_per_second
    loops = measure_busy_engine(weights, ContextParams(n_ctx=2048), 2, 4, nice=0, rounds=1)
    assert [r.adapt_threads for r in loops] == [False, True]
    assert all(r.busy_tokens_per_second > 0 and r.busy_ttft_median > 0 for r in loops)


def test_panechat_bench_is_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--sections", "nonsense"])
    assert exit_info.value.code == 2
    assert "panechat bench" in capsys.readouterr().err


def test_prefix_section_decodes_the_shared_prompt_once(weights: LlamaWeights) -> None:
    result = measure_shared_prefix(
        weights, ContextParams(n_ctx=2048), conversations=3, prefix_tokens=200
    )
    assert result.separate_tokens_decoded == 3 * 200
    assert result.shared_tokens_decoded == 200
    assert result.separate_seconds > 0 and result.shared_seconds > 0


def test_layout_section_measures_each_layout_it_may_load(weights: LlamaWeights) -> None:
    ctx = BenchContext(weights, str(resolve_model_path(None)), ContextParams(n_ctx=2048), 4)
    results = {r.layout: r for r in layout_section(ctx, rounds=1)}
    assert ctx.results["layout"] == list(results.values())
    assert WeightLayout.PLAIN in results
    assert (WeightLayout.AMX in results) == (weights.layout.effective is WeightLayout.AMX)
    assert "CPU_REPACK" not in results[WeightLayout.PLAIN].buffers
    if WeightLayout.REPACK in results:
        assert "CPU_REPACK" in results[WeightLayout.REPACK].buffers
    for r in results.values():
        assert r.prefill_tokens_per_second > 0
        assert r.decode_1_tokens_per_second > 0 and r.decode_8_tokens_per_second > 0


def test_requantized_copy_is_repacked_much_more(tmp_path: Path, weights: LlamaWeights) -> None:
    from core.bench.requantize import requantize

    copy = tmp_path / "q4_0.gguf"
    assert requantize(resolve_model_path(None), copy) == 7 * 18  # 7 matrices in 18 blocks
    with LlamaWeights.load(copy, 0, WeightLayout.REPACK) as requantized:
        assert requantized.name.endswith("(Q4_0 blocks)")
        assert requantized.n_params == weights.n_params
        mib = {b.name: b.mib for b in requantized.load_report.buffers}
        original = {b.name: b.mib for b in weights.load_report.buffers}
        if "CPU_REPACK" in original:
            assert mib["CPU_REPACK"] > 3 * original["CPU_REPACK"]
        executor = BatchedExecutor(requantized, ContextParams(n_ctx=512, n_seq_max=1))
        with executor:
            conv = executor.create()
            conv.prompt("The capital of France is")
            assert executor.infer_sync().ok
            assert 0 <= conv.sample() < requantized.n_vocab


def test_branches_section_decodes_only_what_the_branch_does_not_share(
    weights: LlamaWeights,
) -> None:
    r = measure_branch_switch(weights, ContextParams())
    assert 0 < r.shared_tokens < r.branch_tokens
    # Only the tokens after the shared first turn are decoded (the last one at least: its
    # logits); reading the whole branch again decodes all of them.
    assert r.switch_tokens_decoded <= r.branch_tokens - r.shared_tokens + 1
    assert r.fork_cells == r.branch_tokens - r.shared_tokens
    assert r.switch_seconds > 0 and r.full_read_seconds > 0


def test_roofline_section_decodes_a_synthetic_model_against_the_bandwidth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny synthetic Llama (random Q4_0 weights, written here with gguf) loads and decodes
    at N=1 and N=8; the section prints each target's verdict beside its figure."""
    out = tmp_path / "bench.json"
    argv = ["--sections", "roofline", "--synthetic", "tiny", "--concurrency", "1,8"]
    assert main([*argv, "--tokens", "4", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["roofline"]
    assert [row["conversations"] for row in result["rows"]] == [1, 8]
    assert all(row["tokens"] == 4 * row["conversations"] for row in result["rows"])
    assert all(row["decode_tokens_per_second"] > 0 for row in result["rows"])
    assert result["bandwidth"] > 1e8 and result["roofline_steps"] > 0
    assert result["file_bytes"] >= result["bytes_per_step"] > 0
    assert result["llama_single"] > 0  # llama.cpp's own single-sequence rate, beside it
    printed = capsys.readouterr().out
    assert "of the roofline:" in printed and "the sequential rate (N=1's):" in printed
    assert "llama-cpp-python's own Llama (high-level API, same llama.cpp)" in printed


def test_a_synthetic_model_has_its_shapes_size() -> None:
    """Llama 3.2 1B's shape: 1.24 B parameters (tied embeddings), ~0.70 GB in Q4_0."""
    assert round(LLAMA_1B.parameters() / 1e9, 2) == 1.24
    assert 0.69e9 < LLAMA_1B.weight_bytes() < 0.70e9


def test_frames_between_counts_only_gaps_whose_both_ends_are_known() -> None:
    """The models section's scheduling check, on frame sequences where the old count was
    wrong: a phase that opens with the fast model's frame (the slow model's frame numbers
    run on from an earlier phase: counting from 0 gave 10, the flaky failure), and the wait
    after a reply ends, which is the benchmark's own (it sends the next turn)."""

    def fast(number: int, *, ends: bool = False) -> Frame:
        delta = ChatDelta(text="x", finished=StopReason.MAX_TOKENS if ends else None)
        return Frame({"fast": delta}, FrameStats(frame=number), DEFAULT)

    def slow(number: int) -> Frame:
        return Frame({"slow 0": ChatDelta(text="y")}, FrameStats(frame=number), SLOW)

    recorder = FrameRecorder()
    recorder.frames = [(0.0, f) for f in (fast(5), slow(10), fast(6), slow(11), fast(7))]
    assert recorder.most_frames_between(DEFAULT, SLOW) == 1
    ended = (slow(3), fast(5, ends=True), slow(4), slow(5), slow(6), fast(6), slow(7), fast(7))
    recorder.frames = [(0.0, f) for f in ended]
    assert recorder.most_frames_between(DEFAULT, SLOW) == 1
    starved = (slow(3), fast(5), slow(4), slow(5), fast(6))  # a real scheduling gap
    recorder.frames = [(0.0, f) for f in starved]
    assert recorder.most_frames_between(DEFAULT, SLOW) == 2
