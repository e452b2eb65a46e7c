"""The model the app starts with (``--model``, ``[model]``), loaded as every model is
(:func:`core.chat.load_model`). Each run of the app (the sessions screen may reopen it on
another session) gets a fresh engine: a new context on the same weights, or a new child
process when the weights are on RPC servers."""

from __future__ import annotations

from pathlib import Path

from core import ModelLoadError
from core.chat import (
    ChatEngine,
    ChatModel,
    EngineProcess,
    ModelEngine,
    engine_of,
    load_model,
)
from core.errors import NamedModelError
from core.models.load_progress import ProgressObserver
from core.models.model_path import EMBEDDED_MODEL_NAME
from tui.config import AppConfig, setting_location


class DefaultModel:
    """Loads the default model once (:meth:`load` raises PanechatError, one line) and makes
    an engine for each run of the app; :meth:`close` frees what it loaded."""

    def __init__(
        self, config: AppConfig, loaded: ChatModel | EngineProcess, *, saved: bool = True
    ) -> None:
        self.config = config
        self._restart_hint = restart_hint(saved)  # should the default model's child die
        self._loaded = loaded
        self._first: ModelEngine | None = engine_of(loaded)  # run 1's, made with the load
        self.name = loaded.display_name
        self.offloaded = loaded.offloaded

    @classmethod
    def load(
        cls, config: AppConfig, *, saved: bool = True, progress: ProgressObserver | None = None
    ) -> DefaultModel:
        """``saved``: the run keeps a session (``--resume`` can bring its chats back);
        ``progress`` hears how the weights' load goes (a line on stderr, before the app)."""
        try:
            loaded = load_model(
                config.default_model_spec(),
                nice=config.decode_nice,
                progress=progress,
                restart_hint=restart_hint(saved),
            )
        except NamedModelError as e:
            raise _for_the_user(config, e) from None
        assert isinstance(loaded, ChatModel | EngineProcess), "[model] takes no endpoint"
        return cls(config, loaded, saved=saved)

    @property
    def backend(self) -> str:
        """What the title bar says decodes: "GPU" when weights went to a device."""
        return "GPU" if self.offloaded else "CPU"

    def engine(self) -> ModelEngine:
        """A fresh engine for one run of the app (release it after)."""
        first, self._first = self._first, None
        return first if first is not None else self._new_engine()

    def _new_engine(self) -> ModelEngine:
        if isinstance(self._loaded, EngineProcess):  # the first run's child is gone
            spec = self.config.default_model_spec()
            return EngineProcess.start(
                spec, nice=self.config.decode_nice, restart_hint=self._restart_hint
            )
        try:
            executor = self._loaded.new_context()
        except NamedModelError as e:
            raise _for_the_user(self.config, e) from None
        return ChatEngine(executor, self._loaded.template)

    def release(self, engine: ModelEngine) -> None:
        """Free an engine's context (or child), once nothing decodes with it any more."""
        if isinstance(engine, EngineProcess):
            engine.close()
        elif isinstance(engine, ChatEngine):
            engine.executor.close()  # the first run's too: ChatModel.close() allows that

    def close(self) -> None:
        if self._first is not None:
            self.release(self._first)
            self._first = None
        if isinstance(self._loaded, ChatModel):
            self._loaded.close()


def _for_the_user(config: AppConfig, error: NamedModelError) -> ModelLoadError:
    """The user named one model: say why it failed, and where a context that does not fit
    is set (the config file and line)."""
    if error.setting is not None:
        where = setting_location(config, "context", error.setting)
        if where:
            return ModelLoadError(f"{where}: [context] {error.reason}")
    return ModelLoadError(error.reason)


def restart_hint(saved: bool) -> str:
    """How a user gets the default model's chats back once its child process died."""
    if saved:
        return "restart with `panechat --resume` to go on with these chats"
    return "restart panechat to go on (this run is not saved, so these chats end here)"


def default_model_file(config: AppConfig) -> str:
    """The default model's file name, as the line that shows its load names it."""
    return Path(config.model_path).name if config.model_path else EMBEDDED_MODEL_NAME
