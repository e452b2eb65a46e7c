"""The benchmark itself runs end to end (tiny sizes) on the real model and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import ContextParams, LlamaWeights, resolve_model_path
from core.bench.__main__ import BenchContext, main
from core.bench.fairness import measure_fairness
from core.bench.shared_prefix import measure_shared_prefix
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


def test_app_section_streams_every_pane_and_times_key_presses(weights: LlamaWeights) -> None:
    ctx = BenchContext(weights, str(resolve_model_path(None)), ContextParams(n_ctx=2048), 24)
    (result,) = app_section(ctx, panes=2, intervals=(0.25,), repeats=1)
    assert result.update_interval == 0.25
    assert 0 < result.tokens <= 2 * 24
    assert result.app_tokens_per_second > 0 and result.engine_tokens_per_second > 0
    assert result.executor_tokens_per_second > 0 and result.share_of_executor > 0
    assert result.key_presses >= 1 and 0 < result.key_latency_median <= result.key_latency_max


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
