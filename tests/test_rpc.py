"""llama.cpp's RPC backend on loopback: `panechat rpc-server` processes lend this CPU, and a
client splits the embedded model across them. These run in CI: the README's install builds
llama-cpp-python with RPC, so a build without it fails here instead of skipping."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams, resolve_model_path
from core.bench.rpc import free_port, rpc_servers
from core.device_placement import DevicePlacement
from core.doctor import run_doctor
from core.errors import InvalidParamsError
from core.rpc import REINSTALL, RpcEndpoint, RpcError, rpc_supported
from core.weight_layout import WeightLayout
from tui.cli import main as cli_main

PROMPT = "The capital of France is"


def greedy_text(weights: LlamaWeights, tokens: int = 12) -> str:
    with BatchedExecutor(weights, ContextParams(n_ctx=512, n_seq_max=1)) as executor:
        conv = executor.create(SamplingParams(temperature=0.0))
        conv.prompt(PROMPT)
        pieces = []
        for _ in range(tokens):
            assert executor.infer_sync().ok
            token = conv.sample()
            pieces.append(weights.token_piece(token))
            conv.prompt([token])
    return b"".join(pieces).decode("utf-8", errors="replace")


def test_this_build_has_rpc() -> None:
    assert rpc_supported(), f"llama-cpp-python was built without RPC: {REINSTALL}"


def test_two_loopback_servers_answer_as_this_cpu_does() -> None:
    path = resolve_model_path(None)
    with LlamaWeights.load(path, 0, WeightLayout.PLAIN) as local:
        expected = greedy_text(local)
    with rpc_servers(2) as endpoints:
        placement = DevicePlacement(tuple(endpoints), (1.0, 1.0))
        with LlamaWeights.load(path, -1, WeightLayout.PLAIN, placement=placement) as split:
            devices = split.placement.rpc_devices
            assert [d.name.startswith("RPC") for d in devices] == [True, True]
            for endpoint, device in zip(endpoints, devices, strict=True):
                assert str(endpoint) in f"{device.name} {device.description}"
                assert device.memory_total > 0
            assert split.load_report.layers_offloaded == split.load_report.layers_total
            assert greedy_text(split) == expected


def test_the_doctor_lists_the_rpc_devices_with_their_memory() -> None:
    lines: list[str] = []
    with rpc_servers(1) as endpoints:
        run_doctor(None, placement=DevicePlacement(tuple(endpoints)), out=lines.append)
    report = "\n".join(lines)
    assert f"{endpoints[0]}" in report and "RPC device" in report and "MiB free" in report
    assert "tensor split" in report


def test_a_server_that_does_not_answer_is_one_line_at_start() -> None:
    endpoint = RpcEndpoint("127.0.0.1", free_port())  # nothing listens there
    with pytest.raises(RpcError, match=rf"RPC server {endpoint} does not answer .* rpc-server"):
        LlamaWeights.load(resolve_model_path(None), placement=DevicePlacement((endpoint,)))


def test_bad_addresses_and_splits_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RpcError, match="is not host:port"):
        RpcEndpoint.parse("nonsense")
    with pytest.raises(RpcError, match="is not host:port"):
        RpcEndpoint.parse("host:99999")
    with pytest.raises(InvalidParamsError, match="tensor_split"):
        DevicePlacement((), (-1.0,))
    assert RpcEndpoint.parse("[::1]:50052") == RpcEndpoint("::1", 50052)
    port = free_port()
    assert cli_main(["--rpc", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not answer" in err


def test_a_config_rpc_server_is_checked_with_file_and_key(tmp_path: Path) -> None:
    from tui.config import ConfigError, load_config

    config = tmp_path / "c.toml"
    config.write_text('[model]\nrpc = ["nonsense"]\n')
    with pytest.raises(ConfigError, match=r"line 2: rpc: .*is not host:port"):
        load_config(config)
    config.write_text('[model]\nrpc = ["127.0.0.1:50052"]\ntensor_split = [1, 2]\n')
    placement = load_config(config).placement
    assert placement.rpc == (RpcEndpoint("127.0.0.1", 50052),)
    assert placement.tensor_split == (1.0, 2.0)


def test_binding_beyond_loopback_warns_that_there_is_no_authentication() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "core.rpc_server", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "serving CPU at 0.0.0.0" in server.stdout.readline()
    finally:
        time.sleep(0.2)
        server.kill()
        _, err = server.communicate()
    assert "no authentication" in err and "trusted network" in err


def test_an_unknown_device_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core.rpc_server", "--port", str(free_port()), "--device", "GPU9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no device 'GPU9' on this machine — pick one of: CPU" in result.stderr
