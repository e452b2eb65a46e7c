"""The first test of every run: the real model loads, decodes and samples in a child process
(see native_smoke.py); then that the crash path really stops a run with a clear message."""

from __future__ import annotations

import re
import sys

import pytest
from native_smoke import run_child


@pytest.mark.native_smoke
def test_the_model_loads_decodes_and_samples(request: pytest.FixtureRequest) -> None:
    command = [sys.executable, "-m", "core", "--max-tokens", "6", "The capital of France is"]
    done = run_child(command, request, "loading, decoding and sampling the embedded model")
    assert done.returncode == 0, done.stderr
    assert "[0] The capital of France is" in done.stdout
    assert re.search(r"→ .+ \([1-6] tokens, \w+\)", done.stdout), done.stdout
    assert "tokens/s aggregate" in done.stdout


def run_inner_session(pytester: pytest.Pytester, child: str, timeout: int) -> pytest.RunResult:
    """A pytest run of its own: an in-process test collected first, then a smoke test whose
    child runs ``child``; the plugin must run the smoke test first and stop after it."""
    pytester.makeconftest("from native_smoke import *\n")
    pytester.makepyfile(
        f"""
        import sys
        import pytest
        from native_smoke import run_child

        def test_in_process():
            pass

        @pytest.mark.native_smoke
        def test_smoke(request):
            run_child([sys.executable, "-c", {child!r}], request, "decoding", timeout={timeout})
        """
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-p", "no:asyncio"
    )
    result.assert_outcomes(failed=1)  # the in-process test never ran
    return result


def test_a_crash_fails_one_test_and_stops_the_run(pytester: pytest.Pytester) -> None:
    child = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    run_inner_session(pytester, child, timeout=60).stdout.fnmatch_lines(
        [
            "*llama.cpp crashed the process (SIGSEGV) while decoding*panechat doctor*",
            "*stopped after llama.cpp crashed or hung (SIGSEGV)*",
        ]
    )


def test_a_hang_fails_one_test_and_stops_the_run(pytester: pytest.Pytester) -> None:
    run_inner_session(pytester, "import time; time.sleep(30)", timeout=1).stdout.fnmatch_lines(
        [
            "*llama.cpp hung for 1 s while decoding*",
            "*stopped after llama.cpp crashed or hung (no answer in 1 s)*",
        ]
    )
