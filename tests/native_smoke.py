"""A pytest plugin (loaded by conftest.py) so that a native crash in llama.cpp fails one test
with its cause instead of killing pytest half-way.

Tests marked ``native_smoke`` run first. They run the real model in a child process through
:func:`run_child`; if the child dies of a signal, the test fails saying so, and the run stops
there: the tests after it load the same model in pytest's own process and would crash it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator, Sequence

import pytest

from core.native.amx_trial import killing_signal

NATIVE_CRASH = pytest.StashKey[str]()

HINT = (
    "`panechat doctor` shows the CPU, the llama.cpp build and the weight layout chosen; "
    '`python -m core --weight-layout plain "Hello"` tells whether the CPU kernels are at '
    'fault (the app: weight_layout = "plain" in [model]); report it with the doctor\'s output'
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
        item.session.shouldstop = f"stopped after llama.cpp crashed or hung ({crash})"
    return report


def run_child(
    command: Sequence[str], request: pytest.FixtureRequest, what: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; a death by signal, or no answer in ``timeout`` seconds, fails the test
    with a message that names it, and stops the run."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        request.node.stash[NATIVE_CRASH] = f"no answer in {timeout:g} s"
        pytest.fail(f"llama.cpp hung for {timeout:g} s while {what}. {HINT}.", pytrace=False)
    killed_by = killing_signal(done.returncode)
    if killed_by is not None:
        request.node.stash[NATIVE_CRASH] = killed_by.name
        pytest.fail(
            f"llama.cpp crashed the process ({killed_by.name}) while {what}. {HINT}.\n"
            f"Last output: {done.stderr.strip()[-2000:]}",
            pytrace=False,
        )
    return done
