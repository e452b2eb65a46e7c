"""What llama.cpp said while it loaded a model: where the weights went, how many layers a GPU
took. Read from its log lines, the only place it says so; diagnostics only (``doctor``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_BUFFER = re.compile(r"(\S+) model buffer size =\s*([\d.]+) MiB")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


@dataclass(frozen=True, slots=True)
class BufferUse:
    """One buffer of weights: "CPU_Mapped" 235.2 MiB, "CPU_REPACK" 12.7 MiB, "CUDA0" …"""

    name: str
    mib: float


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The buffers a load filled and the layers a GPU took: how :class:`LlamaWeights` checks
    that a withheld layout stayed out, and what ``doctor`` shows."""

    buffers: tuple[BufferUse, ...] = ()
    layers_offloaded: int | None = None  # None: llama.cpp did not say (no GPU device)
    layers_total: int | None = None

    @classmethod
    def from_log(cls, lines: Iterable[str]) -> LoadReport:
        buffers: list[BufferUse] = []
        offloaded = total = None
        for line in lines:
            if match := _BUFFER.search(line):
                buffers.append(BufferUse(match[1], float(match[2])))
            elif match := _OFFLOADED.search(line):
                offloaded, total = int(match[1]), int(match[2])
        return cls(tuple(buffers), offloaded, total)

    def buffer_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.buffers)

    @property
    def on_devices(self) -> bool:
        """Whether any weights went to a GPU or an RPC server: a buffer that is not host
        memory. (llama.cpp's "offloaded 19/19 layers to GPU" line also appears on a CPU-only
        build with RPC compiled in, with every weight in CPU buffers.)"""
        return any(not (name.startswith("CPU") or name == "AMX") for name in self.buffer_names())
