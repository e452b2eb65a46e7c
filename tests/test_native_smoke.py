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


def test_a_crash_fails_one_test_and_stops_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from native_smoke import *\n")
    pytester.makepyfile(
        """
        import sys
        import pytest
        from native_smoke import run_child

        def test_in_process():
            pass

        @pytest.mark.native_smoke
        def test_smoke(request):
            code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
            run_child([sys.executable, "-c", code], request, "decoding")
        """
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:textual-snapshot", "-p", "no:asyncio"
    )
    result.assert_outcomes(failed=1)  # the in-process test never ran
    result.stdout.fnmatch_lines(
        [
            "*llama.cpp crashed the process (SIGSEGV) while decoding*panechat doctor*",
            "*stopped after a native crash in llama.cpp (SIGSEGV)*",
        ]
    )
