"""Shared fixtures: the real embedded model, loaded once per test session; the native-crash
guard (native_smoke.py) that runs a child-process smoke test first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from native_smoke import (  # noqa: F401 - pytest hooks, found by name
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
)

from core import BatchedExecutor, ContextParams, LlamaWeights, resolve_model_path

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def weights() -> Iterator[LlamaWeights]:
    with LlamaWeights.load(resolve_model_path(None)) as w:
        yield w


@pytest.fixture
def make_executor(weights: LlamaWeights) -> Iterator[object]:
    """Factory for executors that are closed after the test."""
    made: list[BatchedExecutor] = []

    def make(**overrides: object) -> BatchedExecutor:
        defaults: dict[str, object] = {
            "n_ctx": 1024,
            "n_batch": 256,
            "n_ubatch": 256,
            "n_seq_max": 4,
        }
        defaults.update(overrides)
        executor = BatchedExecutor(weights, ContextParams(**defaults))  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


@pytest.fixture(autouse=True)
def isolated_data_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved sessions and exports of the tests never land in the real user data dir."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
