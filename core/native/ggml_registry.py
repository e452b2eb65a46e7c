"""ggml's backend registry, read through ctypes: which backends and devices this llama.cpp
build has, what its CPU backend detected, and which extra weight buffer types (``AMX``,
``CPU_REPACK``, …) it offers a model load — plus the one thing we change there: withholding
some of those buffer types while a model loads.

llama-cpp-python binds ``llama.h`` only. The ``ggml-backend.h`` functions used here are looked
up through libllama's own handle, so they resolve in the very libggml it loaded (wheels ship
``libggml.so`` and ``libggml.so.0`` as separate files: opening one by path could map a second
ggml with a registry of its own). This module never decodes anything.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import llama_cpp

from core.errors import PanechatError

_VP = ctypes.c_void_p
_CSTR = ctypes.c_char_p
_SIZE = ctypes.c_size_t


class RegistryUnavailableError(PanechatError):
    """This llama-cpp-python build does not expose ggml's backend registry as expected."""


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


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def compacted(entries: Sequence[tuple[str, int]], withheld: Collection[str]) -> list[int | None]:
    """The buffer-type array's new contents: the kept entries moved to the front in their
    order, then nulls, so llama.cpp (which stops at the first null) sees only those."""
    kept: list[int | None] = [pointer for name, pointer in entries if name not in withheld]
    return kept + [None] * (len(entries) - len(kept))


class GgmlRegistry:
    """The registry functions, bound once to libllama's handle; get it with :func:`registry`."""

    def __init__(self, library: ctypes.CDLL, library_dir: Path) -> None:
        def bind(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
            try:
                return ctypes.CFUNCTYPE(restype, *argtypes)((name, library))
            except AttributeError as e:
                raise RegistryUnavailableError(
                    f"llama.cpp's library has no {name} — reinstall llama-cpp-python 0.3.x"
                ) from e

        self.version = bind("ggml_version", _CSTR)
        self.commit = bind("ggml_commit", _CSTR)
        self.reg_count = bind("ggml_backend_reg_count", _SIZE)
        self.reg_get = bind("ggml_backend_reg_get", _VP, _SIZE)
        self.reg_name = bind("ggml_backend_reg_name", _CSTR, _VP)
        self.proc_address = bind("ggml_backend_reg_get_proc_address", _VP, _VP, _CSTR)
        self.dev_count = bind("ggml_backend_dev_count", _SIZE)
        self.dev_get = bind("ggml_backend_dev_get", _VP, _SIZE)
        self.dev_by_type = bind("ggml_backend_dev_by_type", _VP, ctypes.c_int)
        self.dev_name = bind("ggml_backend_dev_name", _CSTR, _VP)
        self.dev_description = bind("ggml_backend_dev_description", _CSTR, _VP)
        self.dev_type = bind("ggml_backend_dev_type", ctypes.c_int, _VP)
        self.dev_reg = bind("ggml_backend_dev_backend_reg", _VP, _VP)
        self.dev_memory = bind(
            "ggml_backend_dev_memory", None, _VP, ctypes.POINTER(_SIZE), ctypes.POINTER(_SIZE)
        )
        self.buft_name = bind("ggml_backend_buft_name", _CSTR, _VP)
        self.reg_by_name = bind("ggml_backend_reg_by_name", _VP, _CSTR)
        self.register = bind("ggml_backend_register", None, _VP)
        self.reg_dev_count = bind("ggml_backend_reg_dev_count", _SIZE, _VP)
        self.reg_dev_get = bind("ggml_backend_reg_dev_get", _VP, _VP, _SIZE)
        self.dev_by_name = bind("ggml_backend_dev_by_name", _VP, _CSTR)
        self._library_dir = library_dir
        self._withhold_lock = threading.RLock()

    # -- what the build has -----------------------------------------------------------------

    def ggml_version(self) -> str:
        """ggml's version and the llama.cpp commit it was built from, e.g. "0.25.3 (0c1e570)"."""
        commit = _text(self.commit())
        return f"{_text(self.version())} ({commit})" if commit else _text(self.version())

    def cpu_library_identity(self) -> str:
        """The CPU backend library's name, size and time: two builds of one version (with
        other CPU flags, say) differ in it."""
        found = sorted(self._library_dir.glob("*ggml-cpu*"))
        if not found:
            return "no CPU library beside libllama"
        st = found[0].stat()
        return f"{found[0].name} {st.st_size}:{st.st_mtime_ns}"

    def backends(self) -> tuple[str, ...]:
        """The backends compiled in (or loaded): "CPU", "CUDA", "Metal", "Vulkan", "RPC", …"""
        return tuple(_text(self.reg_name(self.reg_get(i))) for i in range(self.reg_count()))

    def devices(self) -> tuple[Device, ...]:
        """This machine's devices, with their memory as their backends report it. RPC
        devices are left out: asking a server that has gone away for its memory makes
        llama.cpp abort the process (``core.native.rpc`` lists a model's own)."""
        return tuple(self.device(handle) for handle in self.local_device_handles())

    def local_device_handles(self) -> tuple[int, ...]:
        """Handles of every device but the RPC ones (found by name: no server is asked)."""
        handles = (self.dev_get(i) for i in range(self.dev_count()))
        return tuple(h for h in handles if not _text(self.dev_name(h)).startswith("RPC"))

    def device(self, dev: int) -> Device:
        """What one device handle is (an RPC device asks its server for its memory)."""
        free, total = _SIZE(0), _SIZE(0)
        self.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        return Device(
            name=_text(self.dev_name(dev)),
            description=_text(self.dev_description(dev)),
            kind=self.kind(dev),
            memory_free=free.value,
            memory_total=total.value,
        )

    def kind(self, dev: int) -> DeviceKind:
        """What kind of device a handle is (asks no server for anything)."""
        kind = self.dev_type(dev)
        kinds = list(DeviceKind)
        return kinds[kind] if 0 <= kind < len(kinds) else DeviceKind.ACCEL

    def backend_function(self, backend: str, name: str) -> int | None:
        """The address of a backend's own function (``ggml_backend_reg_get_proc_address``),
        or None when this build has no such backend or function."""
        reg = self.reg_by_name(backend.encode())
        address: int | None = self.proc_address(reg, name.encode()) if reg else None
        return address or None

    def register_backend(self, reg: int) -> tuple[int, ...]:
        """Add a backend registration (an RPC server's) to the registry; its device handles."""
        self.register(reg)
        return tuple(self.reg_dev_get(reg, i) for i in range(self.reg_dev_count(reg)))

    def _cpu_proc(self, name: str) -> tuple[int, int, int] | None:
        """(CPU device, its registration, the address of its function ``name``), if any."""
        dev: int | None = self.dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
        reg: int | None = self.dev_reg(dev) if dev else None
        address: int | None = self.proc_address(reg, name.encode()) if reg else None
        if not (dev and reg and address):
            return None
        return dev, reg, address

    def cpu_features(self) -> tuple[CpuFeature, ...]:
        """What the CPU backend was built for and found on this CPU (AVX2, AVX512, AMX_INT8,
        REPACK, OPENMP, …): the list llama.cpp prints as its system info."""
        found = self._cpu_proc("ggml_backend_get_features")
        if found is None:
            return ()
        _, reg, address = found
        array = _GET_FEATURES(address)(reg)
        features: list[CpuFeature] = []
        i = 0
        while array and array[i].name:
            features.append(CpuFeature(_text(array[i].name), _text(array[i].value)))
            i += 1
        return tuple(features)

    # -- the extra buffer types a load may use ----------------------------------------------

    def _extra_buffer_types(self) -> Any:
        """The CPU device's null-terminated array of extra buffer types (a ctypes pointer, or
        None): the very array llama.cpp walks when it decides where each weight goes."""
        found = self._cpu_proc("ggml_backend_dev_get_extra_bufts")
        if found is None:
            return None
        dev, _, address = found
        array = _GET_EXTRA_BUFTS(address)(dev)
        return array if array else None

    def _entries(self, array: Any) -> list[tuple[str, int]]:
        entries: list[tuple[str, int]] = []
        i = 0
        while array is not None and array[i]:
            entries.append((_text(self.buft_name(array[i])), int(array[i])))
            i += 1
        return entries

    def cpu_extra_buffer_types(self) -> tuple[str, ...]:
        """The weight layouts the CPU backend offers besides plain memory, in llama.cpp's order
        of preference: ("AMX", "CPU_REPACK") on an AMX build, ("CPU_REPACK",) on most x86."""
        with self._withhold_lock:
            return tuple(name for name, _ in self._entries(self._extra_buffer_types()))

    @contextmanager
    def withholding_cpu_buffer_types(self, names: Collection[str]) -> Iterator[None]:
        """While the block runs, llama.cpp does not see the named extra buffer types: a model
        loaded inside keeps its weights out of them (withholding "AMX" keeps CPU_REPACK).

        llama.cpp offers no per-type switch (``use_extra_bufts`` is all or nothing), so this
        rewrites the array it reads at load time — the CPU device's list, which
        ``ggml_backend_dev_get_extra_bufts`` returns as a writable pointer — and puts every
        entry back afterwards. Only model loads read that array; weights already loaded keep
        their buffers, and compute is unaffected. Blocks are serialized by a lock, so loads
        inside them are too. Callers check the load's buffers afterwards (it is ggml's
        internal array: a future ggml could copy it)."""
        with self._withhold_lock:
            array = self._extra_buffer_types()
            entries = self._entries(array)
            if array is None or not any(name in names for name, _ in entries):
                yield
                return
            try:
                for i, pointer in enumerate(compacted(entries, names)):
                    array[i] = pointer
                yield
            finally:
                for i, (_, pointer) in enumerate(entries):
                    array[i] = pointer


@functools.cache
def registry() -> GgmlRegistry:
    """The registry of the llama.cpp that llama-cpp-python loaded (backend initialized)."""
    llama_cpp.llama_backend_init()
    library = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    if not isinstance(library, ctypes.CDLL):
        raise RegistryUnavailableError(
            "llama-cpp-python does not expose its library handle — reinstall llama-cpp-python 0.3.x"
        )
    override = os.environ.get("LLAMA_CPP_LIB_PATH")  # where llama-cpp-python looked, too
    return GgmlRegistry(library, Path(override or Path(llama_cpp.__file__).parent / "lib"))
