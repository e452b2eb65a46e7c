"""Models of the size people run, without downloading one: a Llama-shaped GGUF with random
Q4_0 weights, written with the ``gguf`` package.

The embedded Gemma 3 270M spends most of a decode step on its 262k-row output projection; a
user's 1-8B model is bound by memory bandwidth, where batching pays most. These files have a
real model's shape (Llama 3.2 1B's, a 3B one's) and its bytes per decode step, so the bench
measures throughput where it matters. Their text is noise: a benchmark input, never a model to
chat with. Needs the ``gguf`` package (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import PanechatError

#: Weights per Q4_0 block, and its bytes: an fp16 scale and 32 four-bit weights.
Q4_0_BLOCK = 32
Q4_0_BLOCK_BYTES = 18
#: Every block's scale: small enough that random weights keep the activations finite.
WEIGHT_SCALE = 0.002
#: Token ids every vocabulary here has (a SentencePiece-style one, with byte fallback).
UNK, BOS, EOS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a Llama-architecture model's size is made of (the output projection is tied to
    the token embeddings, as Llama 3.2's is)."""

    name: str
    layers: int
    width: int
    feed_forward: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_size(self) -> int:
        return self.width // self.heads

    def matrices(self) -> list[tuple[str, int, int]]:
        """Every quantized weight as (name, rows, columns), in the file's order."""
        kv = self.kv_heads * self.head_size
        found = [("token_embd.weight", self.vocab, self.width)]
        for i in range(self.layers):
            found += [
                (f"blk.{i}.attn_q.weight", self.width, self.width),
                (f"blk.{i}.attn_k.weight", kv, self.width),
                (f"blk.{i}.attn_v.weight", kv, self.width),
                (f"blk.{i}.attn_output.weight", self.width, self.width),
                (f"blk.{i}.ffn_gate.weight", self.feed_forward, self.width),
                (f"blk.{i}.ffn_up.weight", self.feed_forward, self.width),
                (f"blk.{i}.ffn_down.weight", self.width, self.feed_forward),
            ]
        return found

    def weight_bytes(self) -> int:
        """Bytes one decode step reads: every matrix once (the embeddings whole, for the
        tied output projection), plus the norms; the KV cache of a short chat is left out."""
        blocks = sum(rows * columns // Q4_0_BLOCK for _, rows, columns in self.matrices())
        norms = (2 * self.layers + 1) * self.width * 4
        return blocks * Q4_0_BLOCK_BYTES + norms

    def parameters(self) -> int:
        matrices = sum(rows * columns for _, rows, columns in self.matrices())
        return matrices + (2 * self.layers + 1) * self.width


#: Llama 3.2 1B's shape (16 layers, 2048 wide, 128k vocabulary).
LLAMA_1B = ModelShape("Llama-3.2-1B shape", 16, 2048, 8192, 32, 8, 128256)
#: Llama 3.2 3B's shape.
LLAMA_3B = ModelShape("Llama-3.2-3B shape", 28, 3072, 8192, 24, 8, 128256)
#: A tiny one, for tests: the same code path in a fraction of a second.
TINY = ModelShape("tiny synthetic", 2, 128, 256, 4, 2, 1024)
SHAPES = {"1b": LLAMA_1B, "3b": LLAMA_3B, "tiny": TINY}


def write_synthetic_model(target: Path, shape: ModelShape, seed: int = 0) -> Path:
    """Write ``target``: a GGUF of ``shape`` with random Q4_0 weights; returns it."""
    try:
        import gguf
        import numpy as np
    except ImportError as e:  # pragma: no cover - a test install has them
        raise PanechatError("a synthetic model needs the gguf package — pip install gguf") from e
    if shape.width % Q4_0_BLOCK or shape.feed_forward % Q4_0_BLOCK:
        raise PanechatError(f"{shape.name}: widths must be multiples of {Q4_0_BLOCK}")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(target, "llama")
    writer.add_name(shape.name)
    writer.add_block_count(shape.layers)
    writer.add_context_length(8192)
    writer.add_embedding_length(shape.width)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(500000.0)
    writer.add_rope_dimension_count(shape.head_size)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens, kinds = _vocabulary(shape.vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(kinds)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(UNK)
    scale = np.float16(WEIGHT_SCALE).tobytes()
    for name, rows, columns in shape.matrices():
        blocks = rows * columns // Q4_0_BLOCK
        data = rng.integers(0, 256, size=(blocks, Q4_0_BLOCK_BYTES), dtype=np.uint8)
        data[:, :2] = np.frombuffer(scale, dtype=np.uint8)
        data = data.reshape(rows, columns // Q4_0_BLOCK * Q4_0_BLOCK_BYTES)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    ones = np.ones(shape.width, dtype=np.float32)
    writer.add_tensor("output_norm.weight", ones)
    for i in range(shape.layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _vocabulary(size: int) -> tuple[list[str], list[int]]:
    """Tokens for a SentencePiece-style vocabulary: the specials, the 256 byte tokens (so any
    prompt tokenizes), printable characters, then filler to ``size``."""
    normal, unknown, control, byte = 1, 2, 3, 6
    tokens = ["<unk>", "<s>", "</s>"]
    kinds = [unknown, control, control]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    kinds += [byte] * 256
    letters = [chr(c) for c in range(33, 127)] + ["▁"]
    tokens += letters
    kinds += [normal] * len(letters)
    filler = size - len(tokens)
    if filler < 0:
        raise PanechatError(f"a vocabulary of {size} is too small (at least {len(tokens)})")
    tokens += [f"▁t{i}" for i in range(filler)]
    kinds += [normal] * filler
    return tokens, kinds


class SyntheticModels:
    """The synthetic files of one bench run, each written once into a scratch folder that
    :meth:`close` removes (a 1B file takes a while to write and 0.7 GB of disk)."""

    def __init__(self) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._written: dict[str, Path] = {}

    def path(self, shape: ModelShape) -> Path:
        if shape.name not in self._written:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="panechat-synthetic-")
            target = Path(self._scratch.name) / f"{shape.name.replace(' ', '-')}.gguf"
            self._written[shape.name] = write_synthetic_model(target, shape)
        return self._written[shape.name]

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        self._written.clear()
