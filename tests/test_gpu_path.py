"""The GPU code path: the embedded model with every layer on a GPU device (on any machine,
Mesa's software Vulkan device stands in; scripts/gpu-check builds and runs this). On a build
without a GPU backend these skip, unless PANECHAT_REQUIRE_GPU=1 (gpu-check sets it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams, resolve_model_path
from core.native.ggml_registry import DeviceKind, registry
from core.native.weight_layout import WeightLayout

PROMPT = "The capital of France is"
GREEDY = SamplingParams(temperature=0.0)


def gpu_devices() -> list[str]:
    return [d.name for d in registry().devices() if d.kind in (DeviceKind.GPU, DeviceKind.IGPU)]


pytestmark = pytest.mark.skipif(
    not gpu_devices() and os.environ.get("PANECHAT_REQUIRE_GPU") != "1",
    reason="no GPU device in this llama.cpp build (scripts/gpu-check runs these)",
)


@pytest.fixture(scope="module")
def on_device() -> Iterator[LlamaWeights]:
    assert gpu_devices(), "PANECHAT_REQUIRE_GPU=1, but llama.cpp sees no GPU device"
    with LlamaWeights.load(resolve_model_path(None), -1, WeightLayout.PLAIN) as weights:
        yield weights


def greedy(weights: LlamaWeights, tokens: int = 12) -> list[int]:
    with BatchedExecutor(weights, ContextParams(n_ctx=512, n_seq_max=2)) as executor:
        conv = executor.create(GREEDY)
        conv.prompt(PROMPT)
        out = []
        for _ in range(tokens):
            assert executor.infer_sync().ok
            out.append(conv.sample())
            conv.prompt([out[-1]])
        return out


def test_every_layer_and_the_kv_are_on_the_device(on_device: LlamaWeights) -> None:
    report = on_device.load_report
    assert report.on_devices, report.buffer_names()
    assert report.layers_offloaded == report.layers_total
    assert on_device.gpu_offload_supported()


def test_greedy_text_is_the_cpus(on_device: LlamaWeights) -> None:
    with LlamaWeights.load(resolve_model_path(None), 0, WeightLayout.PLAIN) as cpu:
        expected = greedy(cpu)
    assert greedy(on_device) == expected


def test_forks_and_saved_states_on_device_memory(on_device: LlamaWeights, tmp_path: Path) -> None:
    """A fork and a reloaded state continue exactly as their source: their KV cells were
    copied (or read back) in device memory."""
    with BatchedExecutor(on_device, ContextParams(n_ctx=1024, n_seq_max=4)) as executor:
        parent = executor.create(GREEDY)
        parent.prompt(PROMPT)
        assert executor.infer_sync().ok
        child = parent.fork()
        parent.save(tmp_path / "parent.state")
        loaded = executor.load(tmp_path / "parent.state", GREEDY)
        assert loaded.tokens == parent.tokens
        convs = {"parent": parent, "child": child, "loaded": loaded}
        last = parent.tokens[-1]
        for conv in convs.values():  # the last token again, so all three have fresh logits
            conv.rewind(1)
            conv.prompt([last])
        assert executor.infer_sync().ok
        streams: dict[str, list[int]] = {name: [] for name in convs}
        for _ in range(8):
            for name, conv in convs.items():
                token = conv.sample()
                streams[name].append(token)
                conv.prompt([token])
            assert executor.infer_sync().ok
        assert streams["parent"] == streams["child"] == streams["loaded"]
