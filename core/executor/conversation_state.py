"""A saved conversation: its tokens and its sequence's KV data, portable to a file."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from core.errors import StateError

_MAGIC = b"PNCHSEQ1"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ConversationState:
    """Everything needed to rebuild a conversation in a compatible executor without re-decoding.

    ``fingerprint`` names the weights the KV data belongs to; loading into other weights raises
    :class:`StateError` so the caller can fall back to re-prefilling ``tokens``.
    """

    tokens: tuple[int, ...]
    kv_data: bytes
    fingerprint: str
    version: int = STATE_VERSION

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {"version": self.version, "fingerprint": self.fingerprint, "tokens": list(self.tokens)}
        ).encode()
        return _MAGIC + struct.pack("<QQ", len(header), len(self.kv_data)) + header + self.kv_data

    @classmethod
    def from_bytes(cls, blob: bytes) -> ConversationState:
        head = len(_MAGIC) + 16
        if len(blob) < head or not blob.startswith(_MAGIC):
            raise StateError("not a saved panechat conversation (bad magic) — it cannot be loaded")
        header_len, data_len = struct.unpack_from("<QQ", blob, len(_MAGIC))
        if head + header_len + data_len != len(blob):
            raise StateError("saved conversation is truncated or corrupt — it cannot be loaded")
        try:
            header = json.loads(blob[head : head + header_len])
            version = int(header["version"])
            tokens = tuple(int(t) for t in header["tokens"])
            fingerprint = str(header["fingerprint"])
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(
                f"saved conversation header is corrupt ({e}) — it cannot be loaded"
            ) from e
        if version != STATE_VERSION:
            raise StateError(
                f"saved conversation has format version {version}, this panechat reads "
                f"{STATE_VERSION} — re-create it"
            )
        return cls(tokens, bytes(blob[head + header_len :]), fingerprint, version)

    def write(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, target)
        return target

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ConversationState:
        try:
            blob = Path(path).read_bytes()
        except OSError as e:
            raise StateError(f"cannot read saved conversation {path}: {e.strerror}") from e
        return cls.from_bytes(blob)
