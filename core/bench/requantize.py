"""``python -m core.bench.requantize OUT.gguf [--model PATH]``: a copy of a GGUF whose block
weights are requantized to Q4_0, for measuring what the weight layouts cost on weights that
CPU repacking applies to.

The embedded Gemma 3 270M keeps most of its bytes in types llama.cpp's CPU repacking leaves
alone (Q8_0 embeddings, Q5_0 and Q6_K blocks: 13 of its 248 MiB get repacked), so its layout
figures say little about a typical Q4 model. This copy has the same shape and vocabulary, with
every 2-D block weight in Q4_0 (which llama.cpp repacks on AVX2, AVX-512 and Arm). It answers
less well than the original; it is a benchmark input, never a model to chat with.
Needs the ``gguf`` package (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import PanechatError
from core.models.model_path import resolve_model_path


def requantize(source: Path, target: Path) -> int:
    """Write ``target``; return how many tensors were requantized."""
    try:
        import gguf
        import numpy as np
    except ImportError as e:  # pragma: no cover - a test install has it
        raise PanechatError("this tool needs the gguf package — pip install gguf") from e

    reader = gguf.GGUFReader(source)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise PanechatError(f"{source} has no general.architecture — not a model GGUF")
    writer = gguf.GGUFWriter(target, str(arch.contents()))
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.NAME:
            value = f"{value} (Q4_0 blocks)"
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    requantized = 0
    q4_0 = gguf.GGMLQuantizationType.Q4_0
    keep = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, q4_0)
    for tensor in reader.tensors:
        data, kind = np.asarray(tensor.data), tensor.tensor_type
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2 and kind not in keep:
            data = gguf.quants.quantize(gguf.quants.dequantize(data, kind), q4_0)
            kind = q4_0
            requantized += 1
        writer.add_tensor(tensor.name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return requantized


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.requantize", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", help="the GGUF to write")
    parser.add_argument("--model", metavar="PATH", help="source GGUF (default: the embedded)")
    args = parser.parse_args(argv)
    try:
        count = requantize(resolve_model_path(args.model), Path(args.out))
    except (PanechatError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {count} block weights requantized to Q4_0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
