"""Loading ``config.toml``: repo defaults, the user's XDG file, then ``--config``; validated."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli

from core import (
    TEMPLATE_NAMES,
    ContextParams,
    InvalidParamsError,
    PanechatError,
    SamplingParams,
    WeightLayout,
)
from core.chat import EMBEDDED, ModelSpec
from core.chat.config import ChatConfig
from core.chat.endpoint_spec import EndpointSpec
from core.native.atomic_file import replacing
from core.native.device_placement import DevicePlacement
from tui.bindings import BINDING_IDS

APP_NAME = "panechat"
_PANE_ONLY_KEYS = {"name", "system"}
_REPLY_KEYS = {"max_tokens", "stop"}
_SAMPLING_KEYS = set(SamplingParams.__dataclass_fields__)
_PANE_KEYS = _PANE_ONLY_KEYS | _REPLY_KEYS | _SAMPLING_KEYS | {"model", "show_reasoning"}
_CONTEXT_KEYS = {
    "n_ctx",
    "n_batch",
    "n_ubatch",
    "n_seq_max",
    "n_threads",
    "flash_attention",
    "max_frame_stretch",
    "adapt_threads",
}
_MODEL_KEYS = {"path", "template", "n_gpu_layers", "weight_layout", "rpc", "tensor_split"}
_UI_KEYS = {"decode_nice", "update_interval"}
#: How much nicer than the UI thread decoding runs (core/executor/thread_priority.py).
DEFAULT_DECODE_NICE = 10
#: Seconds between screen updates while 8 panes stream (tui/frame_buffer.py).
DEFAULT_UPDATE_INTERVAL = 0.25
UPDATE_INTERVAL_RANGE = (0.05, 2.0)
#: A [models.NAME] served by an OpenAI-compatible endpoint: its URL, its name there, and the
#: environment variable that holds its key.
_ENDPOINT_KEYS = {"endpoint", "endpoint_model", "api_key_env"}
_TOP_KEYS = {"theme", "model", "models", "context", "ui", "pane_defaults", "panes", "keys"}
#: What a [models.NAME] table may set: the model's own keys, and context keys for its executor.
_NAMED_MODEL_KEYS = (_MODEL_KEYS | _CONTEXT_KEYS | _ENDPOINT_KEYS) - {"max_frame_stretch"}


class ConfigError(PanechatError):
    """An invalid config file; the message names the file, the key and the line."""


@dataclass(frozen=True, slots=True)
class AppConfig:
    theme: str
    model_path: str | None
    template: str
    n_gpu_layers: int
    context: ContextParams
    pane_defaults: ChatConfig
    panes: tuple[ChatConfig, ...]
    keys: dict[str, str] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()
    decode_nice: int = DEFAULT_DECODE_NICE  # [ui]; Linux only
    update_interval: float = DEFAULT_UPDATE_INTERVAL  # [ui]
    weight_layout: WeightLayout = WeightLayout.AUTO  # [model]
    models: dict[str, ModelSpec] = field(default_factory=dict)  # [models.NAME], and embedded
    placement: DevicePlacement = field(default_factory=DevicePlacement)  # [model] rpc
    #: The default model's name in panes' ``model`` when the command line names several
    #: models (its file's stem); "" otherwise.
    model_alias: str = ""

    @property
    def default_alias(self) -> str:
        """The default model's other name: "embedded" when it is the embedded model, the
        file's stem when the command line named several models."""
        return self.model_alias or ("" if self.model_path else EMBEDDED)

    def model_key(self, name: str) -> str:
        """A pane's ``model`` as the decode loop names it ("" for the default model)."""
        return "" if name == self.default_alias else name

    def default_model_spec(self) -> ModelSpec:
        """The default model (``--model``, ``[model]``) as a spec, to load it elsewhere (a
        child process, when it is on RPC servers)."""
        return ModelSpec(
            self.default_alias or "default",
            self.model_path,
            self.context,
            self.template,
            self.n_gpu_layers,
            self.weight_layout,
            self.placement,
        )

    def pane_at(self, index: int) -> ChatConfig:
        """The settings of pane ``index``: the configured one, else the defaults, numbered."""
        if index < len(self.panes):
            return self.panes[index]
        return replace(self.pane_defaults, name=f"Pane {index + 1}")

    def opening_panes(self, count: int | None) -> list[ChatConfig]:
        """The panes a start opens: ``count`` of them (None: the configured ones, else one)."""
        base = list(self.panes) or [self.pane_defaults]
        if count is None:
            return base
        return [base[i] if i < len(base) else self.pane_at(i) for i in range(count)]

    def named_models(self) -> dict[str, ModelSpec]:
        """The models besides the default one, loaded when a pane needs them."""
        return {n: s for n, s in self.models.items() if n != self.default_alias}

    def context_size(self, model: str) -> int:
        """The n_ctx of the model a pane names (0: an endpoint's, not known here)."""
        spec = self.named_models().get(self.model_key(model))
        if spec is not None and spec.endpoint is not None:
            return 0
        return spec.context.n_ctx if spec is not None else self.context.n_ctx


def default_config_path() -> Path:
    """The repo's ``config.toml`` (a source checkout), else the copy installed with the app."""
    beside = Path(__file__).resolve().parent.parent / "config.toml"
    if beside.is_file():
        return beside
    import sys

    return Path(sys.prefix) / "share" / APP_NAME / "config.toml"


def user_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def load_config(extra: str | os.PathLike[str] | None = None) -> AppConfig:
    """Defaults, overridden by the user file (if any), overridden by ``extra`` (if given)."""
    sources = [default_config_path()]
    user = user_config_path()
    if user.is_file():
        sources.append(user)
    if extra is not None:
        path = Path(extra).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} — check the --config path")
        sources.append(path)
    merged: dict[str, Any] = {}
    texts: dict[Path, str] = {}
    origin: dict[str, Path] = {}
    for path in sources:
        text, data = _read(path)
        texts[path] = text
        _check_keys(data, path, text)
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
            origin[key] = path
    return _build(merged, texts, origin, tuple(sources))


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    try:
        return text, tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _blocks(text: str, header: str) -> list[tuple[int, int]]:
    """Spans of the text under each ``[header]`` / ``[[header]]`` (``""``: before any table)."""
    starts = [m.start() for m in re.finditer(r"(?m)^\s*\[", text)]
    if header == "":
        return [(0, starts[0] if starts else len(text))]
    spans = []
    pattern = re.compile(rf"^\s*\[\[?\s*{re.escape(header)}\s*\]\]?\s*(#.*)?$")
    for n, start in enumerate(starts):
        line_end = text.find("\n", start)
        line = text[start : line_end if line_end >= 0 else len(text)]
        if pattern.match(line):
            spans.append((start, starts[n + 1] if n + 1 < len(starts) else len(text)))
    return spans


def _line_of(text: str, section: str, key: str, index: int = 0) -> int | None:
    """Line of ``key`` in the ``index``-th block of ``section`` (then in [pane_defaults] for
    pane keys, then anywhere): TOML parsers keep no positions, so look it up in the text."""
    candidates = _blocks(text, section)
    spans = candidates[index : index + 1] if section == "panes" else candidates
    if section == "panes":
        spans += _blocks(text, "pane_defaults")
    spans.append((0, len(text)))
    key_re = re.compile(rf"(?m)^\s*{re.escape(key)}\s*=")
    for start, end in spans:
        match = key_re.search(text, start, end)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def setting_location(config: AppConfig, section: str, key: str) -> str:
    """ "FILE, line N" of the config file that set ``[section] key`` last (for errors found
    after loading, such as an n_ctx the model cannot hold); "" when none did."""
    for path in reversed(config.sources):
        try:
            text, data = _read(path)
        except ConfigError:
            continue
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            return _where(path, text, section, key)
    return ""


def _where(path: Path, text: str, section: str, key: str, index: int = 0) -> str:
    line = _line_of(text, section, key, index)
    return f"{path}, line {line}" if line else str(path)


def _check_keys(data: dict[str, Any], path: Path, text: str) -> None:
    allowed = {
        "model": _MODEL_KEYS,
        "context": _CONTEXT_KEYS,
        "ui": _UI_KEYS,
        "pane_defaults": _PANE_KEYS - _PANE_ONLY_KEYS,
    }
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{_where(path, text, '', key)}: unknown key {key!r}")
    for table, keys in allowed.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{_where(path, text, '', table)}: [{table}] must be a table")
        for key in section:
            if key not in keys:
                known = ", ".join(sorted(keys))
                where = _where(path, text, table, key)
                raise ConfigError(f"{where}: unknown key {key!r} in [{table}] (known: {known})")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(
            f"{_where(path, text, '', 'models')}: models must be [models.NAME] tables"
        )
    for name, table in models.items():
        if not isinstance(table, dict):
            where = _where(path, text, "", "models")
            raise ConfigError(f"{where}: [models.{name}] must be a table")
        for key in table:
            if key not in _NAMED_MODEL_KEYS:
                known = ", ".join(sorted(_NAMED_MODEL_KEYS))
                where = _where(path, text, f"models.{name}", key)
                raise ConfigError(
                    f"{where}: unknown key {key!r} in [models.{name}] (known: {known})"
                )
    panes = data.get("panes", [])
    if not isinstance(panes, list):
        raise ConfigError(f"{path}: panes must be a list of [[panes]] tables")
    for index, pane in enumerate(panes):
        if not isinstance(pane, dict):
            raise ConfigError(f"{path}: every [[panes]] entry must be a table")
        for key in pane:
            if key not in _PANE_KEYS:
                line = _where(path, text, "panes", key, index)
                raise ConfigError(f"{line}: unknown key {key!r} in [[panes]]")


def _build(
    data: dict[str, Any], texts: dict[Path, str], origin: dict[str, Path], sources: tuple[Path, ...]
) -> AppConfig:
    def fail(section: str, key: str, problem: str, index: int = 0) -> ConfigError:
        path = origin.get(section, sources[-1])
        table = "" if section == "theme" else section
        return ConfigError(f"{_where(path, texts[path], table, key, index)}: {key}: {problem}")

    context = data.get("context", {})
    try:
        params = ContextParams(**{k: v for k, v in context.items()})
    except (InvalidParamsError, TypeError) as e:
        key = next((k for k in context if k in str(e)), "context")
        raise fail("context", key, str(e)) from e
    default = _model_spec("", data.get("model", {}), params, fail, "model")
    path, n_gpu_layers = default.path or "", default.n_gpu_layers
    template, weight_layout = default.template, default.weight_layout
    placement = default.placement
    models = {EMBEDDED: ModelSpec(EMBEDDED, None, params)}
    for name, table in data.get("models", {}).items():
        models[name] = _model_spec(name, table, params, fail, f"models.{name}")
    theme = data.get("theme", "textual-dark")
    if not isinstance(theme, str):
        raise fail("theme", "theme", "must be a string")
    decode_nice = data.get("ui", {}).get("decode_nice", DEFAULT_DECODE_NICE)
    if (
        not isinstance(decode_nice, int)
        or isinstance(decode_nice, bool)
        or not 0 <= decode_nice <= 19
    ):
        raise fail("ui", "decode_nice", "must be an integer from 0 (off) to 19")
    update_interval = data.get("ui", {}).get("update_interval", DEFAULT_UPDATE_INTERVAL)
    low, high = UPDATE_INTERVAL_RANGE
    if (
        not isinstance(update_interval, int | float)
        or isinstance(update_interval, bool)
        or not low <= update_interval <= high
    ):
        raise fail("ui", "update_interval", f"must be a number of seconds from {low} to {high}")
    keys = _flat_keymap(data.get("keys", {}))
    if not all(isinstance(v, str) for v in keys.values()):
        raise fail("keys", next(iter(keys)), 'key bindings must be strings like "ctrl+n"')
    for binding_id in keys:
        if binding_id not in BINDING_IDS:
            raise fail(
                "keys",
                binding_id,
                'is no binding id — use one of F1\'s, quoted: "pane.stop" = "ctrl+x"',
            )

    defaults_raw = dict(data.get("pane_defaults", {}))
    defaults = _pane({"name": "Pane", "system": "", **defaults_raw}, fail, "pane_defaults", 0)
    panes = tuple(
        _pane({**defaults_raw, **raw}, fail, "panes", i)
        for i, raw in enumerate(data.get("panes", []))
    )
    for index, pane in enumerate((defaults, *panes)):
        if pane.model and pane.model not in models:
            known = ", ".join(repr(n) for n in models)
            section = "pane_defaults" if index == 0 else "panes"
            problem = (
                f"no model is named {pane.model!r} — add [models.{pane.model}] (known: {known})"
            )
            raise fail(section, "model", problem, max(index - 1, 0))
    return AppConfig(
        theme=theme,
        model_path=path or None,
        template=template,
        n_gpu_layers=n_gpu_layers,
        context=params,
        pane_defaults=defaults,
        panes=panes,
        keys=dict(keys),
        sources=sources,
        decode_nice=decode_nice,
        update_interval=float(update_interval),
        weight_layout=weight_layout,
        models=models,
        placement=placement,
    )


def _model_spec(
    name: str, table: dict[str, Any], params: ContextParams, fail: Any, section: str
) -> ModelSpec:
    """A model's spec from its table (``[model]`` for the default, else ``[models.NAME]``),
    its context from ``[context]`` with the table's own context keys on top."""
    n_gpu_layers = table.get("n_gpu_layers", -1)
    if not isinstance(n_gpu_layers, int) or isinstance(n_gpu_layers, bool):
        raise fail(section, "n_gpu_layers", "must be an integer")
    path = table.get("path", "")
    if not isinstance(path, str):
        raise fail(section, "path", "must be a string")
    try:
        weight_layout = WeightLayout.parse(table.get("weight_layout", "auto"))
    except InvalidParamsError as e:
        raise fail(section, "weight_layout", str(e).removeprefix("weight_layout ")) from e
    template = table.get("template", "auto")
    if not isinstance(template, str) or template not in TEMPLATE_NAMES:
        raise fail(section, "template", f"must be one of: {', '.join(TEMPLATE_NAMES)}")
    overrides = {k: v for k, v in table.items() if k in _CONTEXT_KEYS}
    try:
        context = replace(params, **overrides)
    except (InvalidParamsError, TypeError) as e:
        key = next((k for k in overrides if k in str(e)), "n_ctx")
        raise fail(section, key, str(e)) from e
    rpc = table.get("rpc", [])
    if not isinstance(rpc, list) or not all(isinstance(x, str) for x in rpc):
        raise fail(section, "rpc", 'must be a list of "host:port" strings')
    split = table.get("tensor_split", [])
    if not isinstance(split, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in split
    ):
        raise fail(section, "tensor_split", "must be a list of numbers, e.g. [1, 3]")
    try:
        placement = DevicePlacement.parse(rpc, [float(x) for x in split])
    except PanechatError as e:
        key = "tensor_split" if "tensor_split" in str(e) else "rpc"
        raise fail(section, key, str(e)) from e
    endpoint = _endpoint(name, table, fail, section)
    return ModelSpec(
        name, path or None, context, template, n_gpu_layers, weight_layout, placement, endpoint
    )


def _endpoint(name: str, table: dict[str, Any], fail: Any, section: str) -> EndpointSpec | None:
    """``endpoint`` (with ``endpoint_model``, ``api_key_env``): the model is served there."""
    url = table.get("endpoint")
    if url is None:
        for key in sorted(_ENDPOINT_KEYS & table.keys()):
            raise fail(section, key, 'needs an endpoint = "http://host:port/v1" beside it')
        return None
    for key in sorted(table.keys() - _ENDPOINT_KEYS):  # nothing is loaded here
        raise fail(section, key, "does not apply to a model served by an endpoint")
    for key in sorted(_ENDPOINT_KEYS):
        if not isinstance(table.get(key, ""), str):
            raise fail(section, key, "must be a string")
    try:
        return EndpointSpec(url, table.get("endpoint_model", name), table.get("api_key_env", ""))
    except PanechatError as e:
        raise fail(section, "endpoint", str(e)) from e


def _pane(raw: dict[str, Any], fail: Any, section: str, index: int) -> ChatConfig:
    name = raw.get("name", f"Pane {index + 1}")
    system = raw.get("system", "")
    if not isinstance(name, str) or not name.strip():
        raise fail(section, "name", "must be a non-empty string", index)
    if not isinstance(system, str):
        raise fail(section, "system", "must be a string", index)
    max_tokens = raw.get("max_tokens", 200)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise fail(section, "max_tokens", "must be a positive integer", index)
    stop = raw.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise fail(section, "stop", "must be a list of strings", index)
    sampling_raw = {k: v for k, v in raw.items() if k in _SAMPLING_KEYS}
    for key, value in sampling_raw.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise fail(section, key, f"must be a number, got {value!r}", index)
    try:
        sampling = SamplingParams(**sampling_raw)
    except InvalidParamsError as e:
        key = next((k for k in sampling_raw if str(e).startswith(k)), "temperature")
        raise fail(section, key, str(e), index) from e
    model = raw.get("model", "")
    if not isinstance(model, str):
        raise fail(section, "model", "must be a model's name, from a [models.NAME] table", index)
    show_reasoning = raw.get("show_reasoning", True)
    if not isinstance(show_reasoning, bool):
        raise fail(section, "show_reasoning", "must be true or false", index)
    return ChatConfig(
        name.strip(), system, sampling, max_tokens, tuple(stop), model, show_reasoning
    )


def save_theme_choice(theme: str, path: Path | None = None) -> Path:
    """Persist the chosen theme in the user config, keeping the rest of the file as it is;
    raises OSError when the file cannot be written."""
    target = path or user_config_path()
    line = f'theme = "{theme}"'
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    first_table = re.search(r"(?m)^\s*\[", text)
    head_end = first_table.start() if first_table else len(text)
    head, rest = text[:head_end], text[head_end:]
    if re.search(r"(?m)^\s*theme\s*=.*$", head):
        head = re.sub(r"(?m)^\s*theme\s*=.*$", line, head, count=1)
    else:
        head = line + "\n" + head
    with replacing(target) as partial:  # a crash mid-write keeps the old file whole
        partial.write_text(head + rest, encoding="utf-8")
    return target


def _flat_keymap(table: dict[str, Any]) -> dict[str, Any]:
    """``[keys]`` as binding id -> keys: an unquoted ``pane.stop = "x"`` is a TOML sub-table
    (``{"pane": {"stop": "x"}}``), read as the id it spells."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flat_keymap(value).items()})
        else:
            flat[key] = value
    return flat
