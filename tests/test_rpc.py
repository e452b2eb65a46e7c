"""llama.cpp's RPC backend on loopback: `panechat rpc-server` processes lend this CPU, and a
client splits the embedded model across them. These run in CI: the README's install builds
llama-cpp-python with RPC, so a build without it fails here instead of skipping."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import LlamaWeights, resolve_model_path
from core.bench.rpc import free_port, rpc_servers
from core.diagnostics.rpc_compare import SAME
from core.diagnostics.rpc_compare import main as compare_main
from core.errors import InvalidParamsError
from core.native.device_placement import DevicePlacement
from core.native.rpc import REINSTALL, RpcEndpoint, RpcError, rpc_supported
from tui.cli import main as cli_main

PROMPT = "The capital of France is"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """A panechat command in a process of its own. A client that adds RPC servers keeps them
    in ggml's registry for its lifetime, and any later load that names no devices (llama-cpp-
    python's ``Llama``) would reach for them after the test's servers are gone."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, check=False
    )


def answers(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip().startswith("→")]


def test_this_build_has_rpc() -> None:
    assert rpc_supported(), f"llama-cpp-python was built without RPC: {REINSTALL}"


def test_two_loopback_servers_answer_as_this_cpu_does() -> None:
    demo = ["-m", "core", "--max-tokens", "12", "--weight-layout", "plain", PROMPT]
    local = run(*demo)
    assert local.returncode == 0, local.stderr
    with rpc_servers(2) as endpoints:
        split = run(*demo, "--rpc", ",".join(map(str, endpoints)), "--tensor-split", "1,1")
    assert split.returncode == 0, split.stderr
    assert answers(split.stdout) == answers(local.stdout) and answers(local.stdout)


def test_rpc_logits_are_this_cpus_with_the_plain_layout(tmp_path: Path) -> None:
    """Issue #25: RPC text differs from the local run's because RPC servers keep weights as
    stored in the file while this CPU repacks them; split over two servers, RPC computes
    exactly what this CPU computes with the plain layout, and the repacked kernels only round
    differently (a wrong split or layout would scramble the logits from the first token)."""
    out = tmp_path / "compare.json"
    with rpc_servers(2) as endpoints:
        servers = ",".join(map(str, endpoints))
        compared = run(
            *("-m", "core.diagnostics.rpc_compare", "--rpc", servers, "--tensor-split", "1,1"),
            *("--tokens", "3", "--json", str(out)),
        )
    assert compared.returncode == 0, compared.stderr
    result = json.loads(out.read_text())
    assert max(result["plain_vs_rpc"]["max_abs_diff"]) <= SAME
    local = result["local_vs_rpc"]
    assert local["max_abs_diff"][0] <= 0.15 * local["largest_logit"]
    if result["local_layout"] != "plain":
        assert "RPC computes as this CPU does with --weight-layout plain" in compared.stdout


def test_the_comparison_without_a_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_main([]) == 2
    assert compare_main(["--rpc", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--rpc HOST:PORT" in err[0] and "does not answer" in err[1]


def test_the_doctor_lists_the_rpc_devices_with_their_memory() -> None:
    with rpc_servers(1) as endpoints:
        result = run(
            "-m", "core.diagnostics.doctor", "--rpc", str(endpoints[0]), "--weight-layout", "plain"
        )
    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert f"RPC device    {endpoints[0]}" in report or str(endpoints[0]) in report
    assert "RPC device" in report and "MiB free" in report and "tensor split" in report
    gpu_line = next(line for line in report.splitlines() if line.startswith("GPU layers"))
    assert "offloaded" in gpu_line and "none" not in gpu_line


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
        [sys.executable, "-m", "core.native.rpc_server", "--host", "0.0.0.0", "--port", str(port)],
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
    server = ["-m", "core.native.rpc_server", "--port", str(free_port()), "--device", "GPU9"]
    result = subprocess.run(
        [sys.executable, *server],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no device 'GPU9' on this machine — pick one of: CPU" in result.stderr


def test_the_bench_measures_rpc_against_this_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("-m", "core.bench", "--sections", "rpc", "--tokens", "4", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rpc = json.loads(out.read_text())["rpc"]
    assert rpc["servers"] == 2 and rpc["conversations"] == 8
    assert rpc["local_tokens_per_second"] > 0 and rpc["rpc_tokens_per_second"] > 0
