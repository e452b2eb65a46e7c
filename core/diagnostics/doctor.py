"""``panechat doctor`` (and ``python -m core.diagnostics.doctor``): what panechat runs on, on
one screen of plain text to paste into a bug report — versions, backends, devices, the CPU
features llama.cpp detected, the weight layout chosen and why, GPU layers, threads, the model.

What needs no model is printed first, so that a load that crashes still leaves a report.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import PanechatError
from core.executor.params import default_threads
from core.models.load_report import LoadReport
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.native.amx_trial import TrialRecords, machine_key
from core.native.device_placement import DevicePlacement, add_placement_options, placement_from_args
from core.native.ggml_registry import CpuFeature, Device, DeviceKind, registry
from core.native.machine import cores_available, cpu_name, distribution_version
from core.native.weight_layout import (
    AMX_BUFFER_TYPE,
    LayoutChoice,
    WeightLayout,
    add_layout_option,
    resolve_layout,
)

_MIB = 1024 * 1024
_LABEL = 18  # the longest label, "CPU weight layouts"


@dataclass(frozen=True, slots=True)
class Build:
    """What llama.cpp was built with and runs on: no model needed."""

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

    @classmethod
    def collect(cls) -> Build:
        build = registry()
        return cls(
            panechat=distribution_version("panechat"),
            python=platform.python_version(),
            platform=platform.platform(),
            llama_cpp_python=distribution_version("llama-cpp-python"),
            ggml=build.ggml_version(),
            backends=build.backends(),
            devices=build.devices(),
            cpu=cpu_name(),
            cores=cores_available(),
            cpu_features=build.cpu_features(),
            weight_layouts=build.cpu_extra_buffer_types(),
        )

    @property
    def has_amx(self) -> bool:
        return AMX_BUFFER_TYPE in self.weight_layouts

    @property
    def has_gpu(self) -> bool:
        return any(d.kind in (DeviceKind.GPU, DeviceKind.IGPU) for d in self.devices)

    def features_text(self) -> str:
        return " ".join(
            f.name if f.value == "1" else f"{f.name}={f.value}" for f in self.cpu_features
        )

    def amx_status(self, records: TrialRecords, choice: LayoutChoice | None = None) -> str:
        """The AMX trial's verdict for this machine: this run's, else the stored one."""
        if not self.has_amx:
            return "not needed: this build has no AMX kernels"
        verdict = choice.verdict if choice and choice.verdict else records.get(machine_key())
        if verdict is None:
            return "not run yet (weight_layout = auto runs it at the first load)"
        return f"{verdict.describe()} on {verdict.when}"

    def version_line(self, records: TrialRecords) -> str:
        """The short form for ``--version``."""
        return (
            f"panechat {self.panechat} · llama-cpp-python {self.llama_cpp_python} · "
            f"ggml {self.ggml} · backends: {', '.join(self.backends) or 'none'}\n"
            f"CPU: {self.cpu} ({self.features_text()}) · AMX: {self.amx_status(records)}"
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


def _lines(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"{label:<{_LABEL}}  {value}".rstrip() for label, value in rows)


def format_build(build: Build, amx_status: str, threads: int) -> str:
    """The part of the report that needs no model."""
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
        ("AMX trial", amx_status),
        ("threads", f"{threads} (of {build.cores} cores)"),
    ]
    return _lines(rows)


def format_model(build: Build, model: ModelFacts) -> str:
    """The part of the report about the loaded model and where its weights went."""
    buffers = ", ".join(f"{b.name} {b.mib:,.1f} MiB" for b in model.load.buffers)
    return _lines(
        [
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
    )


def _gpu_layers(build: Build, model: ModelFacts) -> str:
    asked = "all" if model.n_gpu_layers < 0 else str(model.n_gpu_layers)
    if model.load.layers_offloaded is not None and model.load.buffers and not model.load.on_devices:
        return f"none: every weight is in host memory, no GPU or RPC device (asked: {asked})"
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
    retry_amx: bool = False,
    records: TrialRecords | None = None,
    out: Callable[[str], None] = print,
    placement: DevicePlacement | None = None,
) -> None:
    """Describe the build (and run the AMX trial if the layout needs it), then load the model
    as the app would and describe it."""
    records = records or TrialRecords()
    if retry_amx:
        records.forget(machine_key())
    build = Build.collect()
    choice = resolve_layout(layout, records)
    out(format_build(build, build.amx_status(records, choice), threads or default_threads()))
    sys.stdout.flush()
    placement = placement or DevicePlacement()
    with LlamaWeights.load(
        resolve_model_path(model_path), n_gpu_layers, choice, placement=placement
    ) as weights:
        out(format_model(build, ModelFacts.of(weights)))
        if placement.rpc:
            out(format_rpc(placement))


def format_rpc(placement: DevicePlacement) -> str:
    """The RPC servers the model was split across, and each one's device memory now."""
    rows = [
        (
            "RPC device",
            f"{d.name}: {d.description} ({d.memory_free / _MIB:,.0f} of "
            f"{d.memory_total / _MIB:,.0f} MiB free)",
        )
        for d in placement.rpc_devices
    ]
    split = ", ".join(f"{x:g}" for x in placement.tensor_split) or "by free memory"
    return _lines([*rows, ("tensor split", split)])


def doctor_parser(
    prog: str, layout_default: WeightLayout | None = WeightLayout.AUTO
) -> argparse.ArgumentParser:
    """The doctor's options; ``panechat doctor`` adds ``--config`` (and takes the layout from
    it unless ``--weight-layout`` is given)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="What panechat runs on (versions, backends, CPU, weight layout, model), "
        "for bug reports.",
    )
    parser.add_argument("--model", metavar="PATH", help="GGUF file (default: the embedded model)")
    add_layout_option(parser, layout_default)
    add_placement_options(parser)
    parser.add_argument(
        "--retry-amx",
        action="store_true",
        help="forget this machine's AMX trial verdict and try AMX again",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = doctor_parser("python -m core.diagnostics.doctor").parse_args(argv)
    try:
        run_doctor(
            args.model,
            layout=args.weight_layout,
            retry_amx=args.retry_amx,
            placement=placement_from_args(args),
        )
    except PanechatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
