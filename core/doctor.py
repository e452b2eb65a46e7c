"""``panechat doctor`` (and ``python -m core.doctor``): what panechat runs on, on one screen of
plain text to paste into a bug report — versions, backends, devices, the CPU features llama.cpp
detected, the weight layout chosen and why, GPU layers, threads, the model.

Collecting loads the model the way the app does (layout choice included); formatting is pure.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from core.amx_trial import TrialRecords, machine_key
from core.errors import PanechatError
from core.ggml_registry import (
    CpuFeature,
    Device,
    DeviceKind,
    backends,
    cpu_extra_buffer_types,
    cpu_features,
    devices,
    ggml_version,
)
from core.load_report import LoadReport
from core.machine import cores_available, cpu_name
from core.model_path import resolve_model_path
from core.params import default_threads
from core.weight_layout import AMX_BUFFER_TYPE, LayoutChoice, WeightLayout
from core.weights import LlamaWeights

_MIB = 1024 * 1024


def distribution_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "not installed"


@dataclass(frozen=True, slots=True)
class Build:
    """What llama.cpp was built with: no model needed."""

    panechat: str
    python: str
    platform: str
    llama_cpp_python: str
    ggml: str
    backends: tuple[str, ...]
    devices: tuple[Device, ...]
    cpu: str
    cores: int
    cpu_features: tuple[CpuFeature, ...]
    weight_layouts: tuple[str, ...]  # the CPU's extra buffer types
    amx_trial: str  # the stored verdict for this machine, or why there is none

    @classmethod
    def collect(cls, records: TrialRecords | None = None) -> Build:
        offered = cpu_extra_buffer_types()
        if AMX_BUFFER_TYPE not in offered:
            amx = "not needed: this build has no AMX kernels"
        else:
            verdict = (records or TrialRecords()).get(machine_key())
            amx = f"{verdict.describe()} on {verdict.when}" if verdict else "not run yet"
        return cls(
            panechat=distribution_version("panechat"),
            python=platform.python_version(),
            platform=platform.platform(),
            llama_cpp_python=distribution_version("llama-cpp-python"),
            ggml=ggml_version(),
            backends=backends(),
            devices=devices(),
            cpu=cpu_name(),
            cores=cores_available(),
            cpu_features=cpu_features(),
            weight_layouts=offered,
            amx_trial=amx,
        )

    @property
    def has_gpu(self) -> bool:
        return any(d.kind in (DeviceKind.GPU, DeviceKind.IGPU) for d in self.devices)

    def features_text(self) -> str:
        return " ".join(
            f.name if f.value == "1" else f"{f.name}={f.value}" for f in self.cpu_features
        )

    def version_line(self) -> str:
        """The short form for ``--version``."""
        return (
            f"panechat {self.panechat} · llama-cpp-python {self.llama_cpp_python} · "
            f"ggml {self.ggml} · backends: {', '.join(self.backends) or 'none'}\n"
            f"CPU: {self.cpu} ({self.features_text()}) · AMX: {self.amx_trial}"
        )


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """The loaded model, and what its load decided and reported."""

    path: str
    description: str
    size_bytes: int
    n_params: int
    n_layer: int
    n_ctx_train: int
    n_gpu_layers: int  # asked for (-1: all)
    layout: LayoutChoice
    load: LoadReport

    @classmethod
    def of(cls, weights: LlamaWeights) -> ModelFacts:
        return cls(
            path=str(weights.path),
            description=weights.description,
            size_bytes=weights.size_bytes,
            n_params=weights.n_params,
            n_layer=weights.n_layer,
            n_ctx_train=weights.n_ctx_train,
            n_gpu_layers=weights.n_gpu_layers,
            layout=weights.layout,
            load=weights.load_report,
        )


def format_report(build: Build, model: ModelFacts | None, threads: int) -> str:
    """The doctor's screen: one fact a line, aligned labels."""
    rows: list[tuple[str, str]] = [
        ("panechat", build.panechat),
        ("python", f"{build.python} on {build.platform}"),
        ("llama-cpp-python", build.llama_cpp_python),
        ("llama.cpp (ggml)", build.ggml),
        ("backends", ", ".join(build.backends) or "none"),
    ]
    for device in build.devices:
        memory = (
            f", {device.memory_free / _MIB:,.0f} of {device.memory_total / _MIB:,.0f} MiB free"
            if device.memory_total
            else ""
        )
        rows.append(("device", f"{device.name}: {device.description} ({device.kind}{memory})"))
    rows += [
        ("CPU", f"{build.cpu}, {build.cores} cores available"),
        ("CPU features", build.features_text() or "none reported"),
        ("CPU weight layouts", ", ".join(build.weight_layouts) or "none (plain only)"),
        ("AMX trial", build.amx_trial),
        ("threads", f"{threads} (of {build.cores} cores)"),
    ]
    if model is not None:
        buffers = ", ".join(f"{b.name} {b.mib:,.1f} MiB" for b in model.load.buffers)
        rows += [
            ("weight layout", model.layout.summary()),
            ("weight buffers", buffers or "not reported"),
            ("GPU layers", _gpu_layers(build, model)),
            ("model", model.path),
            (
                "",
                f"{model.description}, {model.size_bytes / _MIB:,.0f} MiB, "
                f"{model.n_params / 1e6:,.0f}M parameters, {model.n_layer} layers, "
                f"trained context {model.n_ctx_train:,}",
            ),
        ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows)


def _gpu_layers(build: Build, model: ModelFacts) -> str:
    asked = "all" if model.n_gpu_layers < 0 else str(model.n_gpu_layers)
    if model.load.layers_offloaded is not None:
        return (
            f"{model.load.layers_offloaded} of {model.load.layers_total} offloaded (asked: {asked})"
        )
    if not build.has_gpu:
        return f"none: this llama.cpp build has no GPU backend (asked: {asked})"
    return f"not reported (asked: {asked})"


def run_doctor(
    model_path: str | None,
    *,
    n_gpu_layers: int = -1,
    layout: WeightLayout = WeightLayout.AUTO,
    threads: int = 0,
) -> str:
    """Load the model as the app would, and describe everything; the text to print."""
    weights = LlamaWeights.load(resolve_model_path(model_path), n_gpu_layers, layout)
    try:
        facts = ModelFacts.of(weights)
    finally:
        weights.close()
    return format_report(Build.collect(), facts, threads or default_threads())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.doctor", description="What panechat runs on, for bug reports."
    )
    parser.add_argument("--model", metavar="PATH", help="GGUF file (default: the embedded model)")
    parser.add_argument("--weight-layout", default="auto", help="auto, amx, repack or plain")
    args = parser.parse_args(argv)
    try:
        print(run_doctor(args.model, layout=WeightLayout.parse(args.weight_layout)))
    except PanechatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
