"""Model weights loaded once, shared by every context: vocabulary, tokenizer, template."""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import cast

import llama_cpp

from core.errors import ModelLoadCancelledError, ModelLoadError, PanechatError
from core.executor.context_budget import KvShape
from core.models.load_progress import LoadProgress, ProgressObserver
from core.models.load_report import LoadReport
from core.models.model_path import check_gguf
from core.native import native_log
from core.native.amx_trial import TrialRecords
from core.native.device_placement import DevicePlacement
from core.native.rpc import local_devices
from core.native.weight_layout import LayoutChoice, WeightLayout, resolve_layout, withholding

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            native_log.install()
            llama_cpp.llama_backend_init()
            _backend_ready = True


def _load_model(
    path: Path,
    n_gpu_layers: int,
    choice: LayoutChoice,
    placement: DevicePlacement,
    progress: LoadProgress | None = None,
) -> tuple[llama_cpp.llama_model_p, LoadReport]:
    """One ``llama_model_load_from_file`` with the layout choice applied, and what it said."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_extra_bufts = choice.effective is not WeightLayout.PLAIN
    keep_alive = placement.apply(params)  # the arrays params points at, until the load ends
    if progress is not None:
        progress.attach(params)  # the caller keeps ``progress`` (and its callback) alive
    with native_log.capture() as log, withholding(choice):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    del keep_alive
    if progress is not None and progress.stopped:
        if model:
            llama_cpp.llama_model_free(model)
        if progress.interrupted:
            raise KeyboardInterrupt
        raise ModelLoadCancelledError(f"loading {path.name} was cancelled")
    if not model:
        raise ModelLoadError(
            f"llama.cpp could not load {path} — the file may be truncated or of an "
            "unsupported architecture; try another GGUF"
        )
    return model, LoadReport.from_log(log)


class LlamaWeights:
    """A loaded GGUF model. Load with :meth:`load`; free with :meth:`close` or ``with``.

    Token pieces are cached per token id: detokenizing the streamed tokens of many
    conversations then costs a dict lookup instead of a native call per token.
    """

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        path: Path,
        n_gpu_layers: int,
        layout: LayoutChoice,
        load_report: LoadReport,
        placement: DevicePlacement | None = None,
    ) -> None:
        self._model: llama_cpp.llama_model_p | None = model
        self.path = path
        self.n_gpu_layers = n_gpu_layers
        self.placement = placement or DevicePlacement()  # RPC servers and the split
        self.layout = layout  # which weight layouts the load could use, and why
        self.load_report = load_report  # where llama.cpp put the weights
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._eog: dict[int, bool] = {}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        n_gpu_layers: int = -1,
        layout: WeightLayout | LayoutChoice = WeightLayout.AUTO,
        trials: TrialRecords | None = None,
        placement: DevicePlacement | None = None,
        progress: ProgressObserver | None = None,
    ) -> LlamaWeights:
        """Load a GGUF. ``n_gpu_layers=-1`` offloads every layer (a no-op on a CPU build).

        ``layout`` decides which repacked layouts CPU-resident weights may use
        (:mod:`core.native.weight_layout`); ``auto`` may first try AMX in a child process, once per
        machine, with its verdict kept in ``trials``. A :class:`LayoutChoice` already
        resolved is used as it is. ``placement`` adds RPC servers' devices (:mod:`core.native.rpc`).
        ``progress`` is told how far the load has got, in the loading thread (see
        :class:`~core.models.load_progress.LoadProgress`); returning False cancels it
        (ModelLoadCancelledError)."""
        model_path = check_gguf(path)
        _init_backend()
        placement = placement or DevicePlacement()
        placement.connect()  # before any layout trial: an unreachable server fails first
        choice = layout if isinstance(layout, LayoutChoice) else resolve_layout(layout, trials)
        tracker = LoadProgress(progress) if progress is not None else None
        model, report = _load_model(model_path, n_gpu_layers, choice, placement, tracker)
        leaked = choice.leaks(report.buffer_names())
        if leaked:  # the withheld list did not reach llama.cpp: switch every repacking off
            llama_cpp.llama_model_free(model)
            choice = choice.all_off(f"llama.cpp used {', '.join(leaked)} anyway, so none is used")
            # Told afresh: the first load's fractions already reached 1.0.
            tracker = LoadProgress(progress) if progress is not None else None
            model, report = _load_model(model_path, n_gpu_layers, choice, placement, tracker)
        if tracker is not None:
            tracker.finish()
        return cls(model, model_path, n_gpu_layers, choice, report, placement)

    # -- lifetime -------------------------------------------------------------------------

    @property
    def model(self) -> llama_cpp.llama_model_p:
        if self._model is None:
            raise PanechatError("the model weights were closed")
        return self._model

    @property
    def vocab(self) -> llama_cpp.llama_vocab_p:
        self.model  # noqa: B018 - raises once closed
        return cast("llama_cpp.llama_vocab_p", self._vocab)

    def close(self) -> None:
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaWeights:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - depends on GC timing
        if getattr(self, "_model", None) is not None:
            self.close()

    # -- facts ----------------------------------------------------------------------------

    @property
    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    @property
    def name(self) -> str:
        """The model's own name from its metadata, else the file name."""
        return self.metadata("general.name") or self.path.name

    @property
    def n_params(self) -> int:
        return int(llama_cpp.llama_model_n_params(self.model))

    @property
    def n_layer(self) -> int:
        return int(llama_cpp.llama_model_n_layer(self.model))

    @property
    def size_bytes(self) -> int:
        """Bytes of all the weight tensors."""
        return int(llama_cpp.llama_model_size(self.model))

    @property
    def n_ctx_train(self) -> int:
        return int(llama_cpp.llama_model_n_ctx_train(self.model))

    def kv_shape(self) -> KvShape | None:
        """What one token costs in the KV cache, from the model's shape (None: unreadable)."""
        layers = self.n_layer
        heads = int(llama_cpp.llama_model_n_head(self.model))
        kv_heads = int(llama_cpp.llama_model_n_head_kv(self.model))
        embd = int(llama_cpp.llama_model_n_embd(self.model))
        if min(layers, heads, kv_heads, embd) <= 0:
            return None
        arch = self.metadata("general.architecture") or ""

        def length(kind: str) -> int:
            value = self.metadata(f"{arch}.attention.{kind}_length")
            return int(value) if value and value.isdigit() else embd // heads

        return KvShape(layers, kv_heads, length("key"), length("value"))

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the GGUF, if any."""
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    @property
    def fingerprint(self) -> str:
        """Identifies the weights for saved states: same file name, size, and shape."""
        return f"{self.path.name}:{self.path.stat().st_size}:{self.n_params}:{self.n_vocab}"

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(512)
        n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def gpu_offload_supported(self) -> bool:
        """Whether this model's weights are (or, where llama.cpp does not say, can be) on a GPU
        or an RPC server, so that its KV cache may live there too. ``llama_supports_gpu_offload``
        alone is true for any build with RPC, even with no server and no GPU."""
        if self.load_report.buffers:
            return self.load_report.on_devices
        return bool(llama_cpp.llama_supports_gpu_offload()) and bool(
            self.placement.rpc or local_devices()
        )

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        """Text to token ids. ``parse_special`` turns ``<start_of_turn>``-style markers in
        templated text into their special tokens; user text should be rendered through a
        template rather than relying on this."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), buf, capacity, add_special, parse_special
        )
        if n < 0:  # buffer too small: -n is the size needed
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        return list(buf[:n])

    def token_piece(self, token: int) -> bytes:
        """The raw bytes of one token (special tokens render as nothing)."""
        piece = self._pieces.get(token)
        if piece is None:
            n = llama_cpp.llama_token_to_piece(
                self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False
            )
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, big, len(big), 0, False)
                piece = big.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def token_text(self, token: int) -> str:
        """One token as text, special tokens spelled out (``<bos>``, ``<|im_end|>``); "" for
        no token (-1), as a model without an EOS has."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokens of templated text that starts a sequence: BOS added when the model wants one
        and the text does not spell it already (templates that render ``bos_token`` do)."""
        bos = self.token_text(self.bos_token) if self.add_bos else ""
        add_bos = self.add_bos and not (bos and text.startswith(bos))
        return self.tokenize(text, add_special=add_bos, parse_special=True)

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT and the model's other end markers."""
        eog = self._eog.get(token)
        if eog is None:
            eog = bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))
            self._eog[token] = eog
        return eog

    @property
    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos_token(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self.vocab))

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
