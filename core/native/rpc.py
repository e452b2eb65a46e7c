"""llama.cpp's RPC backend: serve this machine's device to other machines, and use theirs.

An ``rpc-server`` process exposes one of its devices (CPU, a GPU) over TCP; a client that adds
the server gets an ``RPC[host:port]`` device and llama.cpp places model layers (and their KV)
on it as on a local GPU. llama-cpp-python dropped its ``rpc_servers`` parameter and binds only
``llama_supports_rpc()``, so we reach ggml's RPC functions the way llama.cpp's own tools do:
``ggml_backend_reg_by_name("RPC")`` → ``ggml_backend_reg_get_proc_address`` →
``ggml_backend_rpc_add_server`` / ``ggml_backend_rpc_start_server``.

The protocol has no authentication or encryption: a server must only listen where every
client is trusted (loopback by default).
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from core.errors import PanechatError
from core.native.ggml_registry import Device, DeviceKind, registry

DEFAULT_PORT = 50052
#: pip reuses a wheel it built earlier without the flag, hence ``--no-cache-dir``.
REINSTALL = (
    'CMAKE_ARGS="-DGGML_RPC=on" .venv/bin/pip install --force-reinstall --no-cache-dir '
    "--no-deps llama-cpp-python==0.3.36"
)
CONNECT_TIMEOUT = 3.0

_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_START_SERVER = ctypes.CFUNCTYPE(
    None,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_void_p),
)


class RpcError(PanechatError):
    """An RPC server cannot be used: this build has no RPC, a bad address, or no answer."""


@dataclass(frozen=True, slots=True)
class RpcEndpoint:
    """Where an RPC server listens: ``host:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> RpcEndpoint:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RpcError(f"RPC server {text!r} is not host:port — e.g. 192.168.1.20:50052")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_reachable(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Fail with one line unless something accepts connections there. llama.cpp's RPC
        client aborts the whole process when a server does not answer, so we ask first."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                pass
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise RpcError(
                f"RPC server {self} does not answer ({reason}) — start it there with "
                f"`panechat rpc-server --host HOST --port {self.port}`, or check the address"
            ) from e


def rpc_supported() -> bool:
    """Whether this llama-cpp-python was built with ``-DGGML_RPC=on``."""
    return bool(llama_cpp.llama_supports_rpc())


def require_rpc() -> None:
    """One line with the reinstall command unless this build has RPC."""
    if not rpc_supported():
        raise RpcError(f"this llama-cpp-python was built without RPC — reinstall it: {REINSTALL}")


def _function(name: str) -> int:
    require_rpc()
    address = registry().backend_function("RPC", name)
    if address is None:
        raise RpcError(f"llama.cpp's RPC backend has no {name} — reinstall it: {REINSTALL}")
    return address


_added: dict[RpcEndpoint, tuple[int, ...]] = {}
_added_lock = threading.Lock()


def rpc_devices(endpoints: Sequence[RpcEndpoint]) -> tuple[int, ...]:
    """The device handles of these servers, each added to ggml's registry once per process
    (the registry is global, and adding a server twice would list its device twice)."""
    handles: list[int] = []
    with _added_lock:
        for endpoint in endpoints:
            endpoint.check_reachable()  # each time: a server added before may be gone now
            if endpoint not in _added:
                reg = _ADD_SERVER(_function("ggml_backend_rpc_add_server"))(str(endpoint).encode())
                if not reg:
                    raise RpcError(f"llama.cpp could not add RPC server {endpoint}")
                _added[endpoint] = registry().register_backend(reg)
            handles.extend(_added[endpoint])
    return tuple(handles)


def added_devices(endpoints: Sequence[RpcEndpoint]) -> tuple[int, ...]:
    """The device handles of servers :func:`rpc_devices` added before (no server is asked)."""
    with _added_lock:
        missing = [str(e) for e in endpoints if e not in _added]
        if missing:
            raise RpcError(f"RPC server {', '.join(missing)} was not connected — load through it")
        return tuple(handle for e in endpoints for handle in _added[e])


def any_servers_added() -> bool:
    """Whether this process has added an RPC server to ggml's registry."""
    with _added_lock:
        return bool(_added)


def describe(handles: Sequence[int]) -> tuple[Device, ...]:
    """Name, kind and memory of RPC device handles (each asks its server)."""
    return tuple(registry().device(handle) for handle in handles)


def local_devices() -> tuple[int, ...]:
    """This machine's own GPU devices (none on a CPU build): what a model without RPC servers
    may offload to, now that RPC devices may be in the same registry."""
    reg = registry()
    gpu_kinds = (DeviceKind.GPU, DeviceKind.IGPU)
    return tuple(h for h in reg.local_device_handles() if reg.kind(h) in gpu_kinds)


def device_handle(device: str) -> int:
    """This machine's device of that name ("CPU", "CUDA0", …), or one line naming the others."""
    handle: int | None = registry().dev_by_name(device.encode())
    if not handle:
        names = ", ".join(d.name for d in registry().devices())
        raise RpcError(f"no device {device!r} on this machine — pick one of: {names}")
    return handle


def serve(endpoint: RpcEndpoint, device: str, cache_dir: Path | None, threads: int) -> None:
    """Serve ``device`` ("CPU", "CUDA0", …) at ``endpoint`` until the process is stopped."""
    start = _START_SERVER(_function("ggml_backend_rpc_start_server"))
    handle = device_handle(device)
    devices = (ctypes.c_void_p * 1)(handle)
    cache = str(cache_dir).encode() if cache_dir is not None else None
    start(str(endpoint).encode(), cache, threads, 1, devices)
