"""A GGUF file's header read in Python, before llama.cpp sees the file.

llama.cpp trusts a GGUF's header: a file cut short by a failed download, or a header whose
counts are damaged, can make it read past the end or allocate absurd sizes. So the loader
walks the header here first (metadata, tensor table, alignment) and checks that every tensor's
data lies inside the file, and says in one line what is wrong.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import ModelLoadError

#: ggml type id -> (elements per block, bytes per block), as ggml's block structs (gguf-py's
#: GGML_QUANT_SIZES agrees except for Q8_1, which it sizes with f32 scales: ggml's are f16).
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
#: Metadata value types with a fixed size: type id -> struct format.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class _Truncated(Exception):
    pass


@dataclass(frozen=True, slots=True)
class GgufHeader:
    version: int
    tensors: int
    architecture: str
    data_start: int  # where the tensor data begins
    data_end: int | None  # where the last tensor's data ends (None: a type unknown here)


class _Reader:
    """Reads the file through a read-only map: a tokenizer array holds ~10^5 strings, and
    walking them with file reads took 0.4 s; with ``unpack_from`` on the map, a tenth."""

    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data, self.pos, self.size = data, 0, len(data)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos])

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def unpack(self, fmt: str) -> int:
        return int(self.scalar(fmt))

    def scalar(self, fmt: str) -> int | float | bool:
        width = struct.calcsize("<" + fmt)
        if self.pos + width > self.size:
            raise _Truncated
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += width
        return value  # type: ignore[no-any-return]

    def string(self) -> bytes:
        return self.take(self.unpack("Q"))

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize("<" + _SCALARS[item]))
            elif item == _STRING:
                for _ in range(count):
                    self.skip(self.unpack("Q"))
            else:  # llama.cpp's reader refuses arrays of arrays too
                raise ValueError(f"an array of value type {item}")
            return None
        raise ValueError(f"unknown metadata value type {kind}")


def read_header(path: Path) -> GgufHeader:
    """Walk the header; raise a one-line ModelLoadError if it is damaged or the file is cut
    short (a tensor's data beyond its end)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f, _mapped(f, size) as data:
            header = _walk(_Reader(data))
    except _Truncated:
        raise ModelLoadError(
            f"{path} is cut short ({size:,} bytes) inside its header — download it again"
        ) from None
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} has a damaged GGUF header ({e}) — download it again") from e
    if header.data_end is not None and header.data_end > size:
        raise ModelLoadError(
            f"{path} is cut short: its tensors need {header.data_end:,} bytes and the file has "
            f"{size:,} — download it again"
        )
    return header


@contextmanager
def _mapped(f: BinaryIO, size: int) -> Iterator[mmap.mmap | bytes]:
    if size == 0:
        yield b""  # an empty file cannot be mapped
        return
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def _walk(r: _Reader) -> GgufHeader:
    if r.take(4) != b"GGUF":
        raise ValueError("no GGUF magic")
    version = r.unpack("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}; llama.cpp reads versions 2 and 3")
    tensors, kv = r.unpack("Q"), r.unpack("Q")
    # Counts beyond the file's size in bytes are damage, not a short file (each entry takes
    # 13 bytes or more); counts that merely overrun a short file end in _Truncated below.
    if tensors > r.size or kv > r.size:
        raise ValueError(f"{tensors} tensors and {kv} metadata keys cannot fit in the file")
    architecture, alignment = "", DEFAULT_ALIGNMENT
    for _ in range(kv):
        key = r.string().decode("utf-8")
        kind = r.unpack("I")
        value = r.value(kind)
        if key == "general.architecture" and isinstance(value, bytes):
            architecture = value.decode("utf-8")
        elif key == "general.alignment":
            if kind != 4 or not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise ValueError("general.alignment must be a u32 power of two")
            alignment = value
    end: int | None = 0
    for _ in range(tensors):
        r.string()
        dims = [r.unpack("Q") for _ in range(r.unpack("I"))]
        kind, offset = r.unpack("I"), r.unpack("Q")
        elements = 1
        for d in dims:
            elements *= d
        block = GGML_BLOCKS.get(kind)
        if block is None or end is None:
            end = None
        else:
            end = max(end, offset + elements // block[0] * block[1])
    here = r.pos
    data_start = (here + alignment - 1) // alignment * alignment
    return GgufHeader(
        version, tensors, architecture, data_start, None if end is None else data_start + end
    )
