"""The server's side of the decode loop, without HTTP: requests as chats of a real group on
the embedded model. Kept chats make way so that no request finds every sequence taken; a
conversation's next turn branches its kept chat; once the loop has stopped, every request
hears so at once (none waits for ever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.chat_request import ChatRequest, read_chat_request
from api.chat_runs import ChatRuns
from api.errors import ApiError
from api.prompt_cache import PromptCache
from api.served_models import ServedModels
from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams, model_template
from core.chat import ChatConfig, ChatEngine, ChatEngineGroup, EngineFailure

MODELS = ServedModels("embedded")
DEFAULTS = ChatConfig("api", sampling=SamplingParams(temperature=0.0))


def request(*messages: tuple[str, str]) -> ChatRequest:
    body = {
        "model": "embedded",
        "max_tokens": 6,
        "messages": [{"role": role, "content": text} for role, text in messages],
    }
    return read_chat_request(body, DEFAULTS, MODELS.names, 2048)


@pytest.fixture
async def runs(weights: LlamaWeights) -> AsyncIterator[ChatRuns]:
    """Three sequences, two of them for requests at once, the rest for kept chats."""
    executor = BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=3))
    group = ChatEngineGroup(ChatEngine(executor, model_template(weights)), lambda _e: None)
    chats = ChatRuns(
        group,
        MODELS,
        asyncio.get_running_loop(),
        parallel=2,
        queue_limit=4,
        sequences=3,
        cache=PromptCache(1000),
    )
    group.start()
    yield chats
    group.shutdown()
    executor.close()


async def answer(runs: ChatRuns, chat: ChatRequest) -> tuple[bool, str]:
    """(whether the kept chat answered it, the reply), as the HTTP handler reads it."""
    text = ""
    async with runs.chat(chat) as run:
        async for delta in run.deltas():
            text += delta.text
            last: Any = delta
        run.answered(text, last.prompt_tokens + last.reply_tokens)
        return run.cached, text


async def test_kept_chats_make_way_and_a_conversation_finds_its_own(runs: ChatRuns) -> None:
    firsts = []
    for i in range(5):  # more finished conversations than there are sequences
        cached, reply = await answer(runs, request(("user", f"Name the colour number {i}.")))
        assert not cached
        firsts.append(reply)
        assert len(runs.cache) <= 3
    # the newest conversations are still kept: their next turn branches them
    follow_up = request(
        ("user", "Name the colour number 4."), ("assistant", firsts[4]), ("user", "And another?")
    )
    cached, _ = await answer(runs, follow_up)
    assert cached
    # two at once, while chats are kept: each still gets a sequence
    together = await asyncio.gather(
        *(answer(runs, request(("user", f"Count to {n}."))) for n in (3, 4))
    )
    assert all(reply for _, reply in together)


async def test_once_the_loop_has_stopped_every_request_hears_it(runs: ChatRuns) -> None:
    runs.receive(EngineFailure("the decode loop stopped: RuntimeError: boom"))
    await asyncio.sleep(0.05)  # the event comes through the event loop, as from the thread
    with pytest.raises(ApiError) as refused:
        async with runs.chat(request(("user", "Hi"))):
            pass
    assert refused.value.status == 503 and "restart panechat api" in refused.value.message
