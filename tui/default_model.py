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
from core.chat import ChatEngine, EngineProcess, ModelEngine, ModelSpec
from tui.config import AppConfig, setting_location


class DefaultModel:
    """Loads the default model once (:meth:`load` raises PanechatError, one line) and makes
    an engine for each run of the app; :meth:`close` frees what it loaded."""

    def __init__(
        self,
        config: AppConfig,
        weights: LlamaWeights | None,
        template: ChatFormat | None,
        process: EngineProcess | None,
    ) -> None:
        self.config = config
        self._weights = weights
        self._template = template
        self._first: ModelEngine | None = process  # made at load (to fail at start): run 1's
        if process is not None:
            self.name, self.offloaded = process.display_name, process.offloaded
        else:
            assert weights is not None
            self.name = weights.name
            self.offloaded = weights.gpu_offload_supported() and config.n_gpu_layers != 0

    @classmethod
    def load(cls, config: AppConfig) -> DefaultModel:
        if config.placement.rpc:
            process = EngineProcess.start(cls._spec(config), nice=config.decode_nice)
            return cls(config, None, None, process)
        weights = LlamaWeights.load(
            resolve_model_path(config.model_path),
            config.n_gpu_layers,
            config.weight_layout,
            placement=config.placement,
        )
        model = cls(config, weights, model_template(weights, config.template), None)
        try:
            model._first = model._new_engine()  # a context that does not fit fails at start
        except PanechatError:
            weights.close()
            raise
        return model

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
            return EngineProcess.start(self._spec(self.config), nice=self.config.decode_nice)
        assert self._template is not None
        try:
            executor = BatchedExecutor(self._weights, self.config.context)
        except ContextTooLargeError as e:
            where = setting_location(self.config, "context", e.key)
            raise PanechatError(f"{where}: [context] {e}" if where else str(e)) from None
        return ChatEngine(executor, self._template)

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

    @staticmethod
    def _spec(config: AppConfig) -> ModelSpec:
        return ModelSpec(
            config.default_alias or "default",
            config.model_path,
            config.context,
            config.template,
            config.n_gpu_layers,
            config.weight_layout,
            config.placement,
        )
