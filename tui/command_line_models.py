"""Several models named on the command line (``panechat a.gguf b.gguf``, or ``--model`` more
than once): comparing two models side by side, the first thing users try, needs no config
file. The first model is the default one; each other becomes a named model, as a
``[models.NAME]`` table would; the panes alternate between them (pane 1 on a, pane 2 on b,
pane 3 on a...), each named after its model's file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.chat import ModelSpec
from core.chat.config import ChatConfig
from core.models.model_path import check_gguf
from tui.config import AppConfig


def with_models(config: AppConfig, paths: list[str], panes: int | None) -> AppConfig:
    """``config`` with the models ``paths`` name: one path is only the default model (as
    ``--model`` always was); several open ``panes`` panes (default: one per model) that
    alternate between them. A missing or unreadable file raises ModelLoadError (one line)."""
    files = [check_gguf(path) for path in paths if path.strip()]  # "": the configured model
    if len(files) < 2:
        return replace(config, model_path=str(files[0])) if files else config
    names = _model_names(files, taken=set(config.models))
    models = dict(config.models)
    for file, name in zip(files, names, strict=True):
        if name == names[0] or name in models:
            continue  # the default model, or a file named twice
        models[name] = ModelSpec(
            name,
            str(file),
            config.context,
            config.template,
            config.n_gpu_layers,
            config.weight_layout,
            config.placement,
        )
    count = panes if panes is not None else len(set(names))
    configured = list(config.panes)
    pane_configs = tuple(
        _pane(configured[i] if i < len(configured) else config.pane_defaults, names, i)
        for i in range(count)
    )
    return replace(
        config, model_path=str(files[0]), model_alias=names[0], models=models, panes=pane_configs
    )


def _pane(base: ChatConfig, names: list[str], index: int) -> ChatConfig:
    """The ``index``-th pane: on the models in turn, named after its model."""
    name = names[index % len(names)]
    return replace(base, name=name, model=name)


def _model_names(files: list[Path], taken: set[str]) -> list[str]:
    """Each file's stem; a file named twice is one model, and a stem already used (by another
    file, or by a model of the config) gets a number: ``model-2``."""
    names: list[str] = []
    by_file: dict[Path, str] = {}
    for file in files:
        key = file.resolve()
        if key not in by_file:
            name, n = file.stem, 1
            while name in taken:
                n += 1
                name = f"{file.stem}-{n}"
            taken.add(name)
            by_file[key] = name
        names.append(by_file[key])
    return names
