"""The process chat templates render in: killed when a render runs too long (its request's
write included), replaced when it ended between renders, ended by itself when nothing is left
to kill it, and the only one that pays for a template's memory."""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.templates.template_process import RENDER_SECONDS, TemplateProcess
from core.templates.template_worker import Outcome, RenderRequest

ECHO = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
FOR_EVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
#: A gigabyte and more, a step at a time: no check sees it, the memory limit does.
GREEDY = "{{ ('\\t' * 1200).expandtabs(999999)|length }}"
#: Far above the render limit, for a busy machine; what these bounds catch (a render never
#: stopped, a write blocked for ever) would take hours.
HANG = 30.0


def request(source: str, content: str = "Hi") -> RenderRequest:
    return RenderRequest(source, (("user", content),), True, "<bos>", "<eos>")


@pytest.fixture
def renderer() -> Iterator[TemplateProcess]:
    # The app's limit: an ordinary render takes milliseconds, and a busy machine's must fit.
    process = TemplateProcess(render_seconds=RENDER_SECONDS)
    yield process
    process.close()


def test_a_render_that_runs_too_long_is_stopped_and_the_next_gets_a_new_process(
    renderer: TemplateProcess,
) -> None:
    assert renderer.render(request(ECHO)).text == "[user] Hi\n"
    first = renderer.pid
    started = time.monotonic()
    stopped = renderer.render(request(FOR_EVER))
    assert stopped.outcome is Outcome.LIMIT
    assert f"did not finish in {RENDER_SECONDS:g} s" in stopped.text
    assert time.monotonic() - started < HANG
    assert renderer.pid is None  # killed, not left looping
    assert renderer.render(request(ECHO, "again")).text == "[user] again\n"
    assert renderer.pid not in (None, first) and renderer.starts == 2


def test_a_process_that_ended_between_renders_is_replaced_unnoticed(
    renderer: TemplateProcess,
) -> None:
    assert renderer.render(request(ECHO)).outcome is Outcome.TEXT
    pid = renderer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while renderer.pid is not None and time.monotonic() < deadline:  # until it is gone
        time.sleep(0.01)
    reply = renderer.render(request(ECHO, "still here"))
    assert reply.outcome is Outcome.TEXT and reply.text == "[user] still here\n"
    assert renderer.starts == 2


def test_a_template_that_takes_a_gigabyte_costs_the_render_process_not_ours(
    renderer: TemplateProcess,
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    reply = renderer.render(request(GREEDY))
    assert reply.outcome is Outcome.MEMORY and "MiB" in reply.text
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 200 * 1024  # rendered here, it would have been over a gigabyte
    assert renderer.render(request(ECHO)).outcome is Outcome.TEXT  # the same process goes on
    assert renderer.starts == 1


def test_a_render_past_the_process_s_own_limit_ends_it_as_if_its_parent_had_died() -> None:
    """The parent's kill is the usual end; the process's own alarm is for a parent that was
    killed (the OOM killer's likeliest choice: it holds the model) while it rendered."""
    renderer = TemplateProcess(render_seconds=30, own_limit_seconds=0.5)
    try:
        reply = renderer.render(request(FOR_EVER))
        assert reply.outcome is Outcome.FAILED
        assert f"signal {int(signal.SIGALRM)}" in reply.text  # its alarm, not our limit
    finally:
        renderer.close()


def test_a_process_that_stopped_reading_is_replaced_within_the_time_limit(
    renderer: TemplateProcess,
) -> None:
    """A chat larger than a pipe's buffer, written to a process that stopped (SIGSTOP):
    the write is given the render's time, then the process is killed and a new one renders."""
    assert renderer.render(request(ECHO)).outcome is Outcome.TEXT
    pid = renderer.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    reply = renderer.render(request(ECHO, "x" * 300_000))
    assert reply.outcome is Outcome.TEXT and len(reply.text) > 300_000
    assert time.monotonic() - started < HANG and renderer.starts == 2


def test_what_python_prints_at_start_does_not_reach_the_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sitecustomize.py").write_text("print('hello from a sitecustomize')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    renderer = TemplateProcess()
    try:
        assert renderer.render(request(ECHO)).text == "[user] Hi\n"
    finally:
        renderer.close()


def test_a_process_that_cannot_start_says_why_once_and_is_not_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    renderer = TemplateProcess()
    first = renderer.render(request(ECHO))
    assert first.outcome is Outcome.UNAVAILABLE and "did not start" in first.text
    assert renderer.render(request(ECHO)) == first
    assert renderer.starts == 1  # no second start, so no second wait for one
    renderer.close()
    assert "quitting" in renderer.render(request(ECHO)).text
