"""What llama.cpp's RPC backend costs: N=8 on this machine's CPU, and split across two RPC
servers on loopback (``panechat rpc-server`` processes serving this same CPU).

On loopback the servers share our cores, so this measures the protocol's overhead (every
layer's activations cross a socket each decode), not the gain of a second machine.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.bench.prompts import short_prompts
from core.bench.throughput import GREEDY, executor_params, open_executor, run_batched
from core.errors import PanechatError
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.native.device_placement import DevicePlacement
from core.native.rpc import RpcEndpoint
from core.native.weight_layout import LayoutChoice

START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RpcResult:
    conversations: int
    local_tokens_per_second: float
    rpc_tokens_per_second: float
    servers: int
    same_text: int  # conversations whose greedy text is the same both ways

    @property
    def ratio(self) -> float:
        return self.rpc_tokens_per_second / self.local_tokens_per_second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_rpc_server(threads: int = 1) -> tuple[RpcEndpoint, subprocess.Popen[bytes]]:
    """One ``panechat rpc-server`` process on a free loopback port, listening once this
    returns (the caller ends it)."""
    endpoint = RpcEndpoint("127.0.0.1", free_port())
    command = ["-m", "core.native.rpc_server", "--port", str(endpoint.port)]
    command += ["--threads", str(threads)]
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        _wait_listening(endpoint, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return endpoint, process


@contextlib.contextmanager
def rpc_servers(count: int, threads: int = 1) -> Iterator[list[RpcEndpoint]]:
    """``count`` ``panechat rpc-server`` processes on loopback, until the block ends."""
    servers: list[tuple[RpcEndpoint, subprocess.Popen[bytes]]] = []
    try:
        for _ in range(count):
            servers.append(start_rpc_server(threads))
        yield [endpoint for endpoint, _ in servers]
    finally:
        for _, process in servers:
            process.kill()
            process.wait()


def _wait_listening(endpoint: RpcEndpoint, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PanechatError(f"the RPC server for {endpoint} exited ({process.returncode})")
        try:
            endpoint.check_reachable(timeout=0.5)
            return
        except PanechatError:
            time.sleep(0.1)
    raise PanechatError(f"the RPC server for {endpoint} did not start in {START_TIMEOUT:.0f} s")


def measure_rpc(
    model_path: str, params: ContextParams, layout: LayoutChoice, conversations: int, tokens: int
) -> RpcResult:
    prompts = short_prompts(conversations)
    context = executor_params(params, conversations, tokens)
    with LlamaWeights.load(model_path, n_gpu_layers=0, layout=layout) as local:
        executor = open_executor(local, context)
        try:
            here = run_batched(executor, prompts, tokens, GREEDY)
        finally:
            executor.close()
    threads = max(1, params.threads // 2)
    with rpc_servers(2, threads) as endpoints:
        placement = DevicePlacement(tuple(endpoints))
        with LlamaWeights.load(model_path, -1, layout, placement=placement) as split:
            executor = open_executor(split, context)
            try:
                there = run_batched(executor, prompts, tokens, GREEDY)
            finally:
                executor.close()
    same = sum(a == b for a, b in zip(here.texts, there.texts, strict=True))
    return RpcResult(
        conversations, here.tokens_per_second, there.tokens_per_second, len(endpoints), same
    )
