"""The model the app starts with (``--model``, ``[model]``): its weights in this process, or,
when they are spread over RPC servers, in a child process of its own (an
:class:`~core.chat.EngineProcess`), so that a server that goes away ends that process, not
the app. Each run of the app (the sessions screen may reopen it on another session) gets a
fresh engine: a new context on the same weights, or a new child."""

from __future__ import annotations

from core import (
    BatchedExecutor,
    ChatFormat,
    ContextTooLargeError,
    LlamaWeights,
    PanechatError,
    model_template,
    resolve_model_path,
)
from core.chat import ChatEngine, EngineProcess, ModelEngine
from core.models.load_progress import ProgressObserver
from tui.config import AppConfig, setting_location


class DefaultModel:
    """Loads the default model once (:meth:`load` raises PanechatError, one line) and makes
    an engine for each run of the app; :meth:`close` frees what it loaded."""

    def __init__(
        self,
        config: AppConfig,
        weights: LlamaWeights | None,
        template: ChatFormat | None,
        first: ModelEngine,
        *,
        saved: bool = True,
    ) -> None:
        self.config = config
        self._restart_hint = restart_hint(saved)  # should the default model's child die
        self._weights = weights  # None: the model lives in a child process per run
        self._template = template
        self._first: ModelEngine | None = first  # made at load (to fail at start): run 1's
        if isinstance(first, EngineProcess):
            self.name, self.offloaded = first.display_name, first.offloaded
        else:
            assert weights is not None
            self.name = weights.name
            self.offloaded = weights.gpu_offload_supported() and config.n_gpu_layers != 0

    @classmethod
    def load(
        cls, config: AppConfig, *, saved: bool = True, progress: ProgressObserver | None = None
    ) -> DefaultModel:
        """``saved``: the run keeps a session (``--resume`` can bring its chats back);
        ``progress`` hears how the weights' load goes (a line on stderr, before the app)."""
        if config.placement.rpc:
            process = EngineProcess.start(
                config.default_model_spec(),
                nice=config.decode_nice,
                restart_hint=restart_hint(saved),
                progress=progress,
            )
            return cls(config, None, None, process, saved=saved)
        weights = LlamaWeights.load(
            resolve_model_path(config.model_path),
            config.n_gpu_layers,
            config.weight_layout,
            placement=config.placement,
            progress=progress,
        )
        template = model_template(weights, config.template)
        try:  # a context that does not fit fails here, at start
            first = _context_engine(config, weights, template)
        except PanechatError:
            weights.close()
            raise
        return cls(config, weights, template, first, saved=saved)

    @property
    def backend(self) -> str:
        """What the title bar says decodes: "GPU" when weights went to a device."""
        return "GPU" if self.offloaded else "CPU"

    def engine(self) -> ModelEngine:
        """A fresh engine for one run of the app (release it after)."""
        first, self._first = self._first, None
        return first if first is not None else self._new_engine()

    def _new_engine(self) -> ModelEngine:
        if self._weights is None:
            spec = self.config.default_model_spec()
            return EngineProcess.start(
                spec, nice=self.config.decode_nice, restart_hint=self._restart_hint
            )
        assert self._template is not None
        return _context_engine(self.config, self._weights, self._template)

    def release(self, engine: ModelEngine) -> None:
        """Free an engine's context (or child), once nothing decodes with it any more."""
        if isinstance(engine, EngineProcess):
            engine.close()
        elif isinstance(engine, ChatEngine):
            engine.executor.close()

    def close(self) -> None:
        if self._first is not None:
            self.release(self._first)
            self._first = None
        if self._weights is not None:
            self._weights.close()


def _context_engine(config: AppConfig, weights: LlamaWeights, template: ChatFormat) -> ChatEngine:
    """A new context on the loaded weights; one that does not fit names its setting."""
    try:
        executor = BatchedExecutor(weights, config.context)
    except ContextTooLargeError as e:
        where = setting_location(config, "context", e.key)
        raise PanechatError(f"{where}: [context] {e}" if where else str(e)) from None
    return ChatEngine(executor, template)


def restart_hint(saved: bool) -> str:
    """How a user gets the default model's chats back once its child process died."""
    if saved:
        return "restart with `panechat --resume` to go on with these chats"
    return "restart panechat to go on (this run is not saved, so these chats end here)"
