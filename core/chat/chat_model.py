"""A model that chats: how to load it (:class:`ModelSpec`, a ``[models.NAME]`` table), and the
loaded weights, context and chat format it answers with (:class:`ChatModel`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.chat.endpoint_spec import EndpointSpec
from core.errors import ModelLoadCancelledError, NamedModelError, PanechatError, one_line
from core.executor.context_budget import ContextTooLargeError
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.load_progress import ProgressObserver
from core.models.model_path import resolve_model_path
from core.models.weights import LlamaWeights
from core.native.device_placement import DevicePlacement
from core.native.weight_layout import WeightLayout
from core.templates.chat_template import ChatFormat
from core.templates.template_choice import AUTO, model_template

#: The model every install has: the embedded Gemma 3 270M (``[models.embedded]`` needs no table).
EMBEDDED = "embedded"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to load one model. ``path`` None (or empty) is the embedded model."""

    name: str
    path: str | None = None
    context: ContextParams = field(default_factory=ContextParams)
    template: str = AUTO
    n_gpu_layers: int = -1
    weight_layout: WeightLayout = WeightLayout.AUTO
    placement: DevicePlacement = field(default_factory=DevicePlacement)  # RPC servers
    endpoint: EndpointSpec | None = None  # served elsewhere: nothing is loaded here


class ChatModel:
    """A loaded model: its weights, one executor (the batch every chat on it shares) and its
    chat format. Owns them: :meth:`close` frees the context, then the weights."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: LlamaWeights,
        executor: BatchedExecutor,
        template: ChatFormat,
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.executor = executor
        self.template = template

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        beside: tuple[str, ...] = (),
        progress: ProgressObserver | None = None,
    ) -> ChatModel:
        """Load ``spec``; ``beside`` names the models already loaded, so that one that does not
        fit next to them says so; ``progress`` is told how far the weights' load has got.
        Raises PanechatError (one line) on any failure."""
        name = spec.name
        try:
            weights = LlamaWeights.load(
                resolve_model_path(spec.path or None),
                spec.n_gpu_layers,
                spec.weight_layout,
                placement=spec.placement,
                progress=progress,
            )
        except ModelLoadCancelledError:
            raise
        except PanechatError as e:
            raise NamedModelError.said(name, str(e)) from None
        try:
            template = model_template(weights, spec.template)
            executor = BatchedExecutor(weights, spec.context)
        except ContextTooLargeError as e:
            weights.close()
            raise NamedModelError.does_not_fit(name, str(e), e.key, beside) from None
        except PanechatError as e:
            weights.close()
            raise NamedModelError.said(name, str(e)) from None
        except Exception as e:  # a template that breaks Jinja itself, say
            weights.close()
            raise NamedModelError.could_not(name, "be loaded", one_line(e)) from e
        return cls(spec, weights, executor, template)

    def new_context(self) -> BatchedExecutor:
        """Another context on the same weights (a fresh KV cache; the caller closes it).
        Raises NamedModelError, as :meth:`load`, should it not fit."""
        try:
            return BatchedExecutor(self.weights, self.spec.context)
        except ContextTooLargeError as e:
            raise NamedModelError.does_not_fit(self.spec.name, str(e), e.key) from None

    @property
    def offloaded(self) -> bool:
        """Its weights went to a GPU (what the title bar calls the backend)."""
        return self.weights.gpu_offload_supported() and self.spec.n_gpu_layers != 0

    @property
    def display_name(self) -> str:
        """What a title or a transcript calls it: the GGUF's own name, else the table's."""
        return self.weights.name or self.spec.name

    def close(self) -> None:
        """Free the context (a caller may have closed it already), then the weights."""
        self.executor.close()
        self.weights.close()
