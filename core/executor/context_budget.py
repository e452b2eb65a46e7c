"""Whether a context fits the model and the machine, checked before llama.cpp allocates it.

llama.cpp takes any ``n_ctx``: beyond the model's trained context it only warns (and the
replies degrade), and an ``n_ctx`` too big for the memory grows the process until the machine
swaps or the kernel kills it. So the executor asks first: the trained context bounds ``n_ctx``,
and the KV cache's size, estimated from the model's shape, must fit in the memory available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidParamsError

#: Bytes per K or V element: llama.cpp's default cache type is f16.
KV_ELEMENT_BYTES = 2
#: Share of the available memory the KV cache may take (the weights and buffers need room).
KV_MEMORY_SHARE = 0.8


class ContextTooLargeError(InvalidParamsError):
    """``n_ctx`` is beyond what the model was trained for, or what the memory holds."""

    key = "n_ctx"


@dataclass(frozen=True, slots=True)
class KvShape:
    """What one token costs in the KV cache: per layer, a K and a V row per KV head. Every
    layer counts the whole context: llama.cpp's default context parameters keep full-size
    caches for sliding-window layers too (``swa_full``), as its log says when it loads one."""

    layers: int
    kv_heads: int
    key_length: int
    value_length: int

    def bytes_per_token(self) -> int:
        return (
            self.layers * self.kv_heads * (self.key_length + self.value_length) * (KV_ELEMENT_BYTES)
        )


def available_memory() -> int | None:
    """Bytes a new allocation may take without swapping or meeting the OOM killer: the
    machine's available memory, or less where a cgroup (a container, a systemd slice) caps
    this process (None: unknown)."""
    free = _meminfo_available()
    room = cgroup_room()
    if free is None:
        return room
    return free if room is None else min(free, room)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_room(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Room left under this process's cgroup memory limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), if it has one. In a container the group's path may name the
    host's hierarchy, so the cgroup root itself is tried too."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        if number == "0" and controllers == "":  # v2
            base, files = root, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for group in (base / path.lstrip("/"), base):
            room = _room(group / files[0], group / files[1])
            if room is not None:
                return room
    return None


def _room(limit_file: Path, usage_file: Path) -> int | None:
    try:
        limit = limit_file.read_text().strip()
        if limit == "max" or int(limit) >= 2**60:  # no limit
            return None
        return max(0, int(limit) - int(usage_file.read_text()))
    except (OSError, ValueError):
        return None


def check_context(n_ctx: int, n_ctx_train: int, shape: KvShape | None, memory: int | None) -> None:
    """Raise ContextTooLargeError when ``n_ctx`` exceeds the trained context, or when its KV
    cache (``shape`` per token) would not fit in ``memory`` bytes; None skips that check
    (KV on a GPU, or a shape or memory that cannot be read)."""
    if n_ctx_train > 0 and n_ctx > n_ctx_train:
        raise ContextTooLargeError(
            f"n_ctx = {n_ctx:,} is more than this model was trained for ({n_ctx_train:,} "
            f"tokens) — set n_ctx to at most {n_ctx_train}"
        )
    if shape is None or memory is None:
        return
    need = n_ctx * shape.bytes_per_token()
    if need > memory * KV_MEMORY_SHARE:
        fits = max(16, int(memory * KV_MEMORY_SHARE) // max(shape.bytes_per_token(), 1))
        raise ContextTooLargeError(
            f"n_ctx = {n_ctx:,} needs about {need / 2**30:.1f} GiB of KV cache and "
            f"{memory / 2**30:.1f} GiB of memory is available — set n_ctx to at most {fits}"
        )
