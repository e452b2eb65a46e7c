"""A pytest plugin (loaded by conftest.py) so that a native crash in llama.cpp fails one test
with its cause instead of killing pytest half-way.

Tests marked ``native_smoke`` run first. They run the real model in a child process through
:func:`run_child`; if the child dies of a signal, the test fails saying so, and the run stops
there: the tests after it load the same model in pytest's own process and would crash it.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Generator, Sequence

import pytest

NATIVE_CRASH = pytest.StashKey[str]()

HINT = (
    "`panechat doctor` shows the CPU, the llama.cpp build and the weight layout chosen; "
    'try [model] weight_layout = "plain", and report it with that output'
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "native_smoke: runs the real model in a child process, before every other test"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("native_smoke") is None)  # stable


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    crash = item.stash.get(NATIVE_CRASH, None)
    if crash is not None and report.when == "call":
        item.session.shouldstop = f"stopped after a native crash in llama.cpp ({crash})"
    return report


def run_child(
    command: Sequence[str], request: pytest.FixtureRequest, what: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; a death by signal fails the test with a message that names it."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        request.node.stash[NATIVE_CRASH] = name
        pytest.fail(
            f"llama.cpp crashed the process ({name}) while {what}. {HINT}.\n"
            f"Last output: {done.stderr.strip()[-2000:]}",
            pytrace=False,
        )
    return done
