"""The api section of ``panechat bench`` end to end at tiny sizes: our server as its own
process under concurrent streaming clients, the decode loop alone beside it, the prompt
cache's fifth turn; without llama_cpp.server installed it says how to get it."""

from __future__ import annotations

import pytest

from api import api_bench
from core import ContextParams, LlamaWeights, resolve_model_path
from core.bench.__main__ import BenchContext


def test_the_api_section_loads_the_server_and_compares_it_with_the_loop_alone(
    weights: LlamaWeights, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(api_bench, "CLIENTS", (1, 2))
    monkeypatch.setattr(api_bench, "PAIRS", 1)
    monkeypatch.setattr(api_bench, "CACHE_ROUNDS", 1)
    monkeypatch.setattr(api_bench, "TURNS", 2)
    monkeypatch.setattr(api_bench, "peer_available", lambda: False)
    monkeypatch.setattr(api_bench, "SHARE_CLIENTS", 2)
    ctx = BenchContext(weights, str(resolve_model_path(None)), ContextParams(), 8)
    document = api_bench.api_section(ctx)
    out = capsys.readouterr().out
    load = document["load"]
    assert [r.clients for r in load] == [1, 2]
    assert all(0 < r.tokens <= r.clients * 8 and r.tokens_per_second > 0 for r in load)
    assert all(0 < t < r.seconds for r in load for t in r.first_tokens)
    assert document["peer"] == [] and "pip install 'llama-cpp-python[server]'" in out
    assert 0.2 < document["share_of_loop_alone"] < 5
    kept = document["fifth_turn_first_token"]
    assert kept["kept"] > 0 and kept["read_again"] > 0
    assert "At 2 clients:" in out and "Turn 2 of a conversation" in out
    assert ctx.results["api"] is document
