"""The one way a model that chats is loaded, for the default model and for every named one:
in this process (a :class:`ChatModel`), or, when its weights are spread over RPC servers, in a
child process of its own (an :class:`EngineProcess`), so that a server that goes away ends that
process, not the app; or not at all, when an OpenAI-compatible endpoint serves it (an
:class:`EndpointEngine`, once the endpoint has answered)."""

from __future__ import annotations

from core.chat.chat_model import ChatModel, ModelSpec
from core.chat.endpoint_engine import EndpointEngine, check_endpoint
from core.chat.engine import ChatEngine
from core.chat.engine_process import RESTART_HINT, EngineProcess
from core.chat.model_engine import ModelEngine
from core.models.load_progress import ProgressObserver

#: A loaded model: its weights here, a child process that holds them, or an endpoint's.
LoadedModel = ChatModel | EngineProcess | EndpointEngine


def load_model(
    spec: ModelSpec,
    *,
    model: str = "",
    nice: int = 0,
    beside: tuple[str, ...] = (),
    progress: ProgressObserver | None = None,
    restart_hint: str = RESTART_HINT,
) -> LoadedModel:
    """Load ``spec``; ``model`` is the name its frames carry ("" the default model),
    ``beside`` the models loaded already (named when it does not fit next to them).
    Raises ModelLoadError (NamedModelError, one line, for a failure of the model itself)."""
    if spec.endpoint is not None:
        check_endpoint(spec.endpoint, spec.name)
        return EndpointEngine(spec.endpoint, model=model)
    if spec.placement.rpc:
        return EngineProcess.start(
            spec,
            model=model,
            nice=nice,
            beside=beside,
            restart_hint=restart_hint,
            progress=progress,
        )
    return ChatModel.load(spec, beside, progress)


def engine_of(loaded: LoadedModel, model: str = "") -> ModelEngine:
    """The engine that serves a loaded model's chats (the process itself, for a child)."""
    if isinstance(loaded, EngineProcess | EndpointEngine):
        return loaded
    return ChatEngine(loaded.executor, loaded.template, model=model)
