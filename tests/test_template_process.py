"""The process chat templates render in: killed when a render runs too long, replaced when it
ended between renders, and the only one that pays for a template's memory."""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Iterator

import pytest

from core.template_process import TemplateProcess
from core.template_worker import Outcome, RenderRequest

ECHO = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
FOR_EVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
#: A gigabyte and more, a step at a time: no check sees it, the memory limit does.
GREEDY = "{{ ('\\t' * 1200).expandtabs(999999)|length }}"


def request(source: str, content: str = "Hi") -> RenderRequest:
    return RenderRequest(source, (("user", content),), True, "<bos>", "<eos>")


@pytest.fixture
def renderer() -> Iterator[TemplateProcess]:
    process = TemplateProcess(render_seconds=0.5)
    yield process
    process.close()


def test_a_render_that_runs_too_long_is_stopped_and_the_next_gets_a_new_process(
    renderer: TemplateProcess,
) -> None:
    assert renderer.render(request(ECHO)).text == "[user] Hi\n"
    first = renderer.pid
    started = time.monotonic()
    stopped = renderer.render(request(FOR_EVER))
    assert stopped.outcome is Outcome.LIMIT and "took more than 0.5 s" in stopped.text
    assert time.monotonic() - started < 5
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
