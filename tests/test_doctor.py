"""``panechat doctor`` and ``--version``: what panechat runs on, from the real build and model."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

import pytest

from core import WeightLayout
from core.diagnostics.doctor import Build, ModelFacts, format_build, format_model
from core.executor.params import default_threads
from core.models.load_report import BufferUse, LoadReport
from core.native.ggml_registry import CpuFeature, Device, DeviceKind, registry
from core.native.weight_layout import choose_layout


def panechat(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config")}
    return subprocess.run(
        [sys.executable, "-m", "tui", *args], capture_output=True, text=True, timeout=120, env=env
    )


def field(report: str, label: str) -> str:
    """The value on the line that starts with ``label``."""
    for line in report.splitlines():
        if line.startswith(f"{label}  "):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in:\n{report}")


def test_doctor_describes_this_machine_build_and_model(tmp_path: Path) -> None:
    done = panechat("doctor", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert field(report, "llama-cpp-python") == version("llama-cpp-python")
    build = registry()
    assert field(report, "llama.cpp (ggml)") == build.ggml_version()
    assert "CPU" in field(report, "backends").split(", ")
    features = {f.split("=")[0] for f in field(report, "CPU features").split()}
    assert features == {f.name for f in build.cpu_features()} and features
    layout = field(report, "weight layout")
    if "AMX" in build.cpu_extra_buffer_types():
        assert layout.startswith(("amx (auto): AMX passed", "repack (auto): AMX "))
    else:
        assert layout == "repack (auto): this llama.cpp build has no AMX kernels; uses CPU_REPACK"
        assert field(report, "AMX trial") == "not needed: this build has no AMX kernels"
    assert field(report, "threads") == f"{default_threads()} (of {default_threads()} cores)"
    assert "CPU_Mapped" in field(report, "weight buffers")
    assert "asked: all" in field(report, "GPU layers")
    assert field(report, "model").endswith(".gguf")
    assert "268M parameters, 18 layers" in report


def test_doctor_follows_the_config_and_checks_it(tmp_path: Path) -> None:
    config = tmp_path / "plain.toml"
    config.write_text('[model]\nweight_layout = "plain"\n\n[context]\nn_threads = 1\n')
    done = panechat("doctor", "--config", str(config), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        field(done.stdout, "weight layout")
        == "plain: asked for; weights stay as stored in the file"
    )
    assert "CPU_REPACK" not in field(done.stdout, "weight buffers")
    assert field(done.stdout, "threads").startswith("1 (of ")
    config.write_text('[model]\nweight_layout = "fastest"\n')
    done = panechat("doctor", "--config", str(config), home=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "line 2: weight_layout: must be one of 'auto', 'amx', 'repack', 'plain'" in done.stderr


def test_version_is_the_short_form(tmp_path: Path) -> None:
    done = panechat("--version", home=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first.startswith(f"panechat {version('panechat')} · llama-cpp-python ")
    assert version("llama-cpp-python") in first and registry().ggml_version() in first
    assert second.startswith("CPU: ") and " · AMX: " in second


def _build(devices: tuple[Device, ...]) -> Build:
    return Build(
        panechat="0.1.0",
        python="3.11.7",
        platform="Linux",
        llama_cpp_python="0.3.36",
        ggml="0.25.3 (0c1e570)",
        backends=tuple(dict.fromkeys(d.name.rstrip("0") for d in devices)),
        devices=devices,
        cpu="Intel(R) Xeon(R) Platinum 8481C",
        cores=2,
        cpu_features=(CpuFeature("AVX512", "1"), CpuFeature("AMX_INT8", "1")),
        weight_layouts=("AMX", "CPU_REPACK"),
    )


def _model(load: LoadReport, n_gpu_layers: int = -1) -> ModelFacts:
    return ModelFacts(
        path="/models/m.gguf",
        description="llama 8B Q4_K - Medium",
        size_bytes=4_700 * 1024 * 1024,
        n_params=8_000_000_000,
        n_layer=32,
        n_ctx_train=8192,
        n_gpu_layers=n_gpu_layers,
        layout=choose_layout(WeightLayout.AUTO, ("AMX", "CPU_REPACK")),
        load=load,
    )


@pytest.mark.parametrize(
    ("devices", "load", "n_gpu_layers", "expected"),
    [
        ((), LoadReport(), -1, "none: this llama.cpp build has no GPU backend (asked: all)"),
        (
            (Device("CUDA0", "NVIDIA H200", DeviceKind.GPU, 100 << 30, 140 << 30),),
            LoadReport((BufferUse("CUDA0", 4000.0),), 20, 33),
            20,
            "20 of 33 offloaded (asked: 20)",
        ),
    ],
)
def test_report_lines_for_cpu_and_gpu_machines(
    devices: tuple[Device, ...],
    load: LoadReport,
    n_gpu_layers: int,
    expected: str,
) -> None:
    cpu = Device("CPU", "Intel Xeon", DeviceKind.CPU, 0, 0)
    build = _build((cpu, *devices))
    amx = "crashed a trial decode (SIGSEGV) on 2026-12-01"
    report = (
        format_build(build, amx, threads=2) + "\n" + format_model(build, _model(load, n_gpu_layers))
    )
    assert field(report, "GPU layers") == expected
    assert field(report, "AMX trial") == "crashed a trial decode (SIGSEGV) on 2026-12-01"
    assert field(report, "CPU features") == "AVX512 AMX_INT8"
    assert field(report, "weight layout").startswith("repack (auto): AMX not tried")
    assert "8,000M parameters, 32 layers, trained context 8,192" in report
    if devices:
        assert field(report, "device").startswith("CPU: Intel Xeon (CPU)")
        assert "CUDA0: NVIDIA H200 (GPU, 102,400 of 143,360 MiB free)" in report


def test_retry_amx_forgets_the_stored_verdict(tmp_path: Path) -> None:
    from core.diagnostics.doctor import run_doctor
    from core.native.amx_trial import TrialOutcome, TrialRecords, TrialVerdict, machine_key

    records = TrialRecords(tmp_path / "trials.json")
    records.put(machine_key(), TrialVerdict(TrialOutcome.CRASHED, "SIGILL", date(2026, 1, 2)))
    records.put("another machine", TrialVerdict(TrialOutcome.PASSED, "", date(2026, 1, 2)))
    printed: list[str] = []
    run_doctor(None, layout=WeightLayout.PLAIN, retry_amx=True, records=records, out=printed.append)
    assert records.get(machine_key()) is None and records.get("another machine") is not None
    build_part, model_part = printed
    assert field(build_part, "panechat") and field(model_part, "weight layout").startswith("plain")


def test_the_command_line_layout_beats_the_config(tmp_path: Path) -> None:
    config = tmp_path / "repack.toml"
    config.write_text('[model]\nweight_layout = "repack"\n')
    done = panechat("doctor", "--config", str(config), "--weight-layout", "plain", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert field(done.stdout, "weight layout").startswith("plain: asked for")
    done = panechat("doctor", "--weight-layout", "fastest", home=tmp_path)
    assert (
        done.returncode == 2
        and "must be one of 'auto', 'amx', 'repack', 'plain', got 'fastest'" in done.stderr
    )
