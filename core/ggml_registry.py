"""ggml's backend registry, read through ctypes: which backends and devices this llama.cpp
build has, what its CPU backend detected, and which extra weight buffer types (``AMX``,
``CPU_REPACK``, …) it offers a model load — plus the one thing we change there: withholding
some of those buffer types while a model loads.

llama-cpp-python binds ``llama.h`` only. The few ``ggml-backend.h`` functions used here live in
``libggml`` / ``libggml-base``, which it ships beside ``libllama`` and which are already loaded
in this process (opening them again returns the same libraries, so we see libllama's ggml).
This module never decodes anything.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import llama_cpp

_VP = ctypes.c_void_p
_CSTR = ctypes.c_char_p


class DeviceKind(StrEnum):
    """``enum ggml_backend_dev_type``, in its order."""

    CPU = "CPU"
    GPU = "GPU"
    IGPU = "integrated GPU"
    ACCEL = "accelerator"
    META = "meta device"


@dataclass(frozen=True, slots=True)
class Device:
    """One device a model's layers can be placed on."""

    name: str  # "CPU", "CUDA0", "Vulkan0", "RPC[host:port]"
    description: str
    kind: DeviceKind
    memory_free: int  # bytes
    memory_total: int


@dataclass(frozen=True, slots=True)
class CpuFeature:
    """A feature the CPU backend was built with and detected ("AVX2" = "1", "SVE_CNT" = "16")."""

    name: str
    value: str


class _Feature(ctypes.Structure):
    _fields_ = (("name", _CSTR), ("value", _CSTR))


_GET_EXTRA_BUFTS = ctypes.CFUNCTYPE(ctypes.POINTER(_VP), _VP)
_GET_FEATURES = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), _VP)


def _library_dir() -> Path:
    """Where llama-cpp-python loaded libllama from (it honours the same variable)."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    return Path(override) if override else Path(llama_cpp.__file__).parent / "lib"


def _library_path(name: str) -> Path:
    folder = _library_dir()
    if sys.platform == "win32":  # pragma: no cover - not built on our CI
        candidates = [folder / f"{name}.dll", folder / f"lib{name}.dll"]
    elif sys.platform == "darwin":  # pragma: no cover
        candidates = [folder / f"lib{name}.dylib", folder / f"lib{name}.so"]
    else:
        candidates = [folder / f"lib{name}.so"]
    return next((path for path in candidates if path.exists()), candidates[0])


def _open(name: str) -> ctypes.CDLL:
    return ctypes.CDLL(str(_library_path(name)))  # an OSError names the path if it is missing


def library_identity() -> str:
    """The CPU backend library's size and time: two builds of one version (with other CPU
    flags, say) differ in it."""
    path = _library_path("ggml-cpu")
    try:
        st = path.stat()
    except OSError:
        return f"{path.name} missing"
    return f"{path.name} {st.st_size}:{st.st_mtime_ns}"


def _bind(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)


@functools.cache
def _ggml() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """(libggml-base, libggml) with the signatures we call; the backend initialized first."""
    llama_cpp.llama_backend_init()
    base, registry = _open("ggml-base"), _open("ggml")
    _bind(base, "ggml_version", _CSTR)
    _bind(base, "ggml_commit", _CSTR)
    _bind(base, "ggml_backend_reg_name", _CSTR, _VP)
    _bind(base, "ggml_backend_reg_get_proc_address", _VP, _VP, _CSTR)
    _bind(base, "ggml_backend_dev_name", _CSTR, _VP)
    _bind(base, "ggml_backend_dev_description", _CSTR, _VP)
    _bind(base, "ggml_backend_dev_type", ctypes.c_int, _VP)
    _bind(base, "ggml_backend_dev_backend_reg", _VP, _VP)
    _bind(
        base,
        "ggml_backend_dev_memory",
        None,
        _VP,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    )
    _bind(base, "ggml_backend_buft_name", _CSTR, _VP)
    _bind(registry, "ggml_backend_reg_count", ctypes.c_size_t)
    _bind(registry, "ggml_backend_reg_get", _VP, ctypes.c_size_t)
    _bind(registry, "ggml_backend_dev_count", ctypes.c_size_t)
    _bind(registry, "ggml_backend_dev_get", _VP, ctypes.c_size_t)
    _bind(registry, "ggml_backend_dev_by_type", _VP, ctypes.c_int)
    return base, registry


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def ggml_version() -> str:
    """ggml's version and the llama.cpp commit it was built from, e.g. "0.25.3 (0c1e570)"."""
    base, _ = _ggml()
    commit = _text(base.ggml_commit())
    return f"{_text(base.ggml_version())} ({commit})" if commit else _text(base.ggml_version())


def backends() -> tuple[str, ...]:
    """The backends compiled in (or loaded): "CPU", "CUDA", "Metal", "Vulkan", "RPC", …"""
    base, registry = _ggml()
    return tuple(
        _text(base.ggml_backend_reg_name(registry.ggml_backend_reg_get(i)))
        for i in range(registry.ggml_backend_reg_count())
    )


def devices() -> tuple[Device, ...]:
    """Every device of every backend, with its memory as the backend reports it."""
    base, registry = _ggml()
    found: list[Device] = []
    kinds = list(DeviceKind)
    for i in range(registry.ggml_backend_dev_count()):
        dev = registry.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = base.ggml_backend_dev_type(dev)
        found.append(
            Device(
                name=_text(base.ggml_backend_dev_name(dev)),
                description=_text(base.ggml_backend_dev_description(dev)),
                kind=kinds[kind] if 0 <= kind < len(kinds) else DeviceKind.ACCEL,
                memory_free=free.value,
                memory_total=total.value,
            )
        )
    return tuple(found)


def _cpu_device() -> tuple[int | None, int | None]:
    """(CPU device, its backend registration), or Nones in a build without a CPU backend."""
    base, registry = _ggml()
    dev = registry.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return None, None
    return dev, base.ggml_backend_dev_backend_reg(dev)


def _proc(name: str) -> int | None:
    base, _ = _ggml()
    _, reg = _cpu_device()
    return base.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None


def cpu_features() -> tuple[CpuFeature, ...]:
    """What the CPU backend was built for and found on this CPU (AVX2, AVX512, AMX_INT8,
    REPACK, OPENMP, …): the list llama.cpp prints as its system info."""
    address = _proc("ggml_backend_get_features")
    if not address:
        return ()
    _, reg = _cpu_device()
    array = _GET_FEATURES(address)(reg)
    found: list[CpuFeature] = []
    i = 0
    while array and array[i].name:
        found.append(CpuFeature(_text(array[i].name), _text(array[i].value)))
        i += 1
    return tuple(found)


def _extra_buffer_types() -> ctypes._Pointer[ctypes.c_void_p] | None:
    """The CPU device's null-terminated array of extra buffer types: the very array
    llama.cpp walks when it picks where each weight of a model goes."""
    address = _proc("ggml_backend_dev_get_extra_bufts")
    if not address:
        return None
    dev, _ = _cpu_device()
    array = _GET_EXTRA_BUFTS(address)(dev)
    return array if array else None


def cpu_extra_buffer_types() -> tuple[str, ...]:
    """The weight layouts the CPU backend offers besides plain memory, in llama.cpp's order of
    preference: e.g. ("AMX", "CPU_REPACK") on an AMX build, ("CPU_REPACK",) on most x86."""
    with _withhold_lock:
        return tuple(name for name, _ in _entries(_extra_buffer_types()))


def _entries(array: ctypes._Pointer[ctypes.c_void_p] | None) -> list[tuple[str, int]]:
    base, _ = _ggml()
    entries: list[tuple[str, int]] = []
    i = 0
    while array is not None and array[i]:
        pointer = int(array[i])
        entries.append((_text(base.ggml_backend_buft_name(pointer)), pointer))
        i += 1
    return entries


_withhold_lock = threading.RLock()


@contextmanager
def withholding_cpu_buffer_types(names: Collection[str]) -> Iterator[None]:
    """While the block runs, llama.cpp does not see the named extra buffer types: a model
    loaded inside it keeps those weights out of them (withholding "AMX" keeps CPU_REPACK;
    withholding all of them equals ``use_extra_bufts = False``).

    llama.cpp offers no per-type switch, so this edits the array it reads at load time (the
    CPU device's list, returned as a writable pointer by ``ggml_backend_dev_get_extra_bufts``)
    and puts every entry back afterwards. Only loads read that array; weights already loaded
    keep their buffers, and compute is unaffected. Loads made inside are serialized."""
    with _withhold_lock:
        array = _extra_buffer_types()
        entries = _entries(array)
        kept = [pointer for name, pointer in entries if name not in names]
        if array is None or len(kept) == len(entries):
            yield
            return
        try:
            for i, pointer in enumerate(kept):
                array[i] = pointer
            for i in range(len(kept), len(entries)):
                array[i] = None
            yield
        finally:
            for i, (_, pointer) in enumerate(entries):
                array[i] = pointer
