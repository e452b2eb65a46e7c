"""``panechat api`` from the outside: the server as its own process on loopback, on the
embedded model through the real llama.cpp, driven by the official ``openai`` client and by
plain HTTP: chat, stream, logprobs, concurrent requests in one batch, an abort mid-stream,
the errors a client gets, the API key and a full queue."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from api_server import ROOT, Server, start_server

from api.api_bench import free_port
from core import BatchedExecutor, ContextParams, LlamaWeights, SamplingParams

MODEL = "embedded"
NEAR_TIE = 0.5  # nats: how close the token a batched run chose must be to the solo run's


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from start_server()


@pytest.fixture(scope="module")
def strict_server() -> Iterator[Server]:
    """One slot, no queue, and a key."""
    yield from start_server("--parallel", "1", "--queue", "0", "--api-key", "sesame")


def ask(client: openai.OpenAI, text: str, **options: Any) -> Any:
    options.setdefault("temperature", 0)
    options.setdefault("max_tokens", 24)
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **options
    )


def test_models_and_health(server: Server) -> None:
    assert [m.id for m in server.client().models.list()] == [MODEL]
    assert server.get("/health")["chats"] == 0


def test_a_chat_is_answered_and_its_stream_says_the_same(server: Server) -> None:
    client = server.client()
    whole = ask(client, "What is the capital of France?")
    choice = whole.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert whole.usage.prompt_tokens > 5 and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(
        ask(
            client,
            "What is the capital of France?",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_max_tokens_ends_a_reply_with_length(server: Server) -> None:
    reply = ask(server.client(), "Write a long story about a dragon.", max_tokens=5, stop=[])
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5


def test_earlier_turns_and_a_system_prompt_are_read(server: Server) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL,
        temperature=0,
        max_tokens=20,
        messages=[
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "My name is Zorblax."},
            {"role": "assistant", "content": "Hello Zorblax."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert "Zorblax" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 25  # all of it was read


def test_logprobs_are_the_tokens_odds(server: Server) -> None:
    reply = ask(server.client(), "What is the capital of France?", logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and "".join(t.token for t in content).strip().startswith(
        reply.choices[0].message.content[:10]
    )
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        odds = [t.logprob for t in token.top_logprobs]
        assert odds == sorted(odds, reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy: the likeliest was chosen
        assert token.bytes == list(token.token.encode())


def first_apart(reference: list[Any], other: list[Any]) -> int | None:
    """Where two greedy runs' tokens first differ (None: nowhere). Where they do, ``other``'s
    token must be a near-tie of ``reference``'s choice (its log-probability within
    :data:`NEAR_TIE`): llama.cpp's batched kernels round differently from single-sequence
    ones; a crossed reply would differ by far more."""
    first = next(
        (i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a.token != b.token),
        None,
    )
    if first is not None:
        odds = {t.token: t.logprob for t in reference[first].top_logprobs}
        token = other[first].token
        assert token in odds, f"{token!r} was not a near choice: a crossed reply?"
        assert reference[first].logprob - odds[token] < NEAR_TIE
    return first


PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What is the largest planet?",
    "Name a fruit.",
    "What do bees make?",
    "What colour is the sky?",
]


def test_concurrent_requests_each_get_their_own_reply(server: Server) -> None:
    """8 requests at once decode in one batch; each reply is the one its request gets alone,
    or first differs at a near-tie of the solo run (batched kernels round differently)."""
    client = server.client()
    solo = [ask(client, p, logprobs=True, top_logprobs=5) for p in PROMPTS]
    together: list[Any] = [None] * len(PROMPTS)
    overlap = threading.Barrier(len(PROMPTS))

    windows: list[tuple[float, float]] = []

    def run(i: int) -> None:
        overlap.wait()
        began = time.monotonic()
        together[i] = ask(client, PROMPTS[i], logprobs=True, top_logprobs=5)
        windows.append((began, time.monotonic()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert max(b for b, _ in windows) < min(e for _, e in windows)  # all were open at once
    for alone, batched in zip(solo, together, strict=True):
        same_or_near_tie(alone, batched)


def test_a_client_that_goes_away_mid_stream_frees_its_chat(server: Server) -> None:
    stream = ask(
        server.client(),
        "Write a long story.",
        stream=True,
        max_tokens=2000,
        stop=[],
        temperature=0.8,
    )
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    assert server.open_chats() == 1
    stream.close()
    deadline = time.monotonic() + 10
    while server.open_chats() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_chats() == 0
    assert (
        "Paris" in ask(server.client(), "What is the capital of France?").choices[0].message.content
    )


def test_errors_are_openai_shaped_and_the_server_keeps_serving(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        ask(client, "apple river stone " * 4000)
    assert too_long.value.code == "context_length_exceeded"
    status, _, body = server.post("/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["message"] == "the request body is not valid JSON"
    status, _, body = server.post("/v1/chat/completions", b"x" * (5 * 1024 * 1024))
    assert status == 413 and "bytes" in body["error"]["message"]
    status, _, body = server.post("/v1/nothing", b"{}")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    assert server.open_chats() == 0
    assert "Paris" in ask(client, "What is the capital of France?").choices[0].message.content


def test_a_key_is_required_when_given(strict_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(strict_server.client("wrong"), "Hi")
    assert ask(strict_server.client("sesame"), "Hi").choices[0].message.content
    assert strict_server.get("/health")["status"] == "ok"  # no key: health is not under /v1


def test_a_full_server_says_503_with_retry_after(strict_server: Server) -> None:
    stream = ask(
        strict_server.client("sesame"),
        "Write a long story.",
        stream=True,
        max_tokens=2000,
        stop=[],
        temperature=0.8,
    )
    next(iter(stream))
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    auth = {"Authorization": "Bearer sesame"}
    status, headers, answer = strict_server.post("/v1/chat/completions", body, auth)
    assert status == 503 and headers["Retry-After"] == "1"
    assert "busy" in answer["error"]["message"]
    stream.close()
    deadline = time.monotonic() + 10
    while strict_server.get("/health")["chats"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status, _, answer = strict_server.post("/v1/chat/completions", body, auth)
    assert status == 200 and answer["choices"][0]["message"]["content"] is not None


def test_listening_off_loopback_needs_a_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui", "api", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "give --api-key" in done.stderr and "Traceback" not in done.stderr


def converse(server: Server, messages: list[dict[str, str]]) -> tuple[str, Any]:
    """One turn of a conversation: whether the kept chat answered it, and the reply."""
    create: Any = server.client().chat.completions.with_raw_response.create
    raw = create(
        model=MODEL, messages=messages, temperature=0, max_tokens=24, logprobs=True, top_logprobs=5
    )
    return raw.headers["X-Panechat-Prompt-Cache"], raw.parse()


def same_or_near_tie(a: Any, b: Any) -> None:
    """Two greedy replies to one request: equal, or first apart where the first run's
    runner-up was within a near-tie (prompts decoded in other batches round differently)."""
    if first_apart(a.choices[0].logprobs.content, b.choices[0].logprobs.content) is None:
        assert a.choices[0].message.content == b.choices[0].message.content


def test_a_conversations_next_turn_is_answered_from_its_kept_chat(server: Server) -> None:
    """A client sends the whole conversation each turn: the turn after a reply branches the
    chat that gave it (only the new turn is decoded), and says the same as a fresh chat."""
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name a big city in Japan."},
    ]
    cached, first = converse(server, messages)
    assert cached == "miss"
    for question in ("Name another one.", "And one more?"):
        messages += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": question},
        ]
        cached, reply = converse(server, messages)
        assert cached == "hit"
        again, fresh = converse(server, messages)  # the same request: its chat was taken
        assert again == "miss"
        same_or_near_tie(reply, fresh)
        assert fresh.usage.prompt_tokens == reply.usage.prompt_tokens
        first = fresh
    edited = [*messages[:-2], {"role": "assistant", "content": "Osaka, I think."}, messages[-1]]
    assert converse(server, edited)[0] == "miss"  # the reply sent back is not the one given


def test_kept_chats_make_way_for_new_requests(server: Server) -> None:
    """Finished chats keep their sequences only while no request needs them."""
    client = server.client()
    for i in range(12):  # more conversations than the context has sequences
        assert ask(client, f"Say the number {i}.").choices[0].message.content
    health = server.get("/health")
    assert health["chats"] == 0 and 1 <= health["kept"] <= 8
    replies = []
    threads = [threading.Thread(target=lambda p=p: replies.append(ask(client, p))) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(replies) == 8 and all(r.choices[0].message.content for r in replies)


def rss_kib(process: subprocess.Popen[str]) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_32_streaming_clients_each_get_their_own_reply_and_memory_stays_flat(
    server: Server,
) -> None:
    """A bounded load: 32 clients streaming at once, three rounds (8 decode together, the
    rest wait for a slot). Each reply is what its request gets alone, up to a near-tie; no
    request is lost; the server's memory does not grow from round to round."""
    client = server.client()
    prompts = [f"Tell me about the number {i}." for i in range(32)]
    solo = [ask(client, p, logprobs=True, top_logprobs=5, max_tokens=16) for p in prompts]

    def one_round() -> list[Any]:
        replies: list[Any] = [None] * len(prompts)

        def run(i: int) -> None:
            chunks = list(
                ask(client, prompts[i], stream=True, logprobs=True, top_logprobs=5, max_tokens=16)
            )
            replies[i] = chunks

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        return replies

    sizes = []
    for _ in range(3):
        for alone, chunks in zip(solo, one_round(), strict=True):
            assert chunks is not None, "a request was lost"
            streamed = [
                token
                for c in chunks
                if c.choices and c.choices[0].logprobs
                for token in c.choices[0].logprobs.content
            ]
            if first_apart(alone.choices[0].logprobs.content, streamed) is None:
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text == alone.choices[0].message.content
        sizes.append(rss_kib(server.process))
    assert server.open_chats() == 0
    assert sizes[2] - sizes[0] < 32 * 1024, f"the server grew by {sizes[2] - sizes[0]} KiB"


def test_a_raw_prompt_is_continued_as_the_model_continues_it(
    server: Server, weights: LlamaWeights
) -> None:
    """``/v1/completions`` decodes the prompt as it is (no chat format) and continues it: the
    same tokens the executor samples greedily for that prompt, the first blank kept."""
    prompt = "The capital of France is"
    reply = server.client().completions.create(
        model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=3
    )
    executor = BatchedExecutor(weights, ContextParams(n_ctx=512, n_seq_max=1))
    try:
        conv = executor.create(SamplingParams(temperature=0.0))
        tokens = weights.tokenize_prompt(prompt)
        conv.prompt(tokens)
        sampled: list[int] = []
        for _ in range(8):
            executor.infer_sync()
            sampled.append(conv.sample())
            conv.prompt(sampled[-1:])
    finally:
        executor.close()
    pieces = [weights.token_piece(t).decode("utf-8", "replace") for t in sampled]
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    served = choice.logprobs.tokens
    top = choice.logprobs.top_logprobs or []
    assert len(top) == 8 and all(len(t) == 3 for t in top)
    apart = next((i for i, (a, b) in enumerate(zip(served, pieces, strict=True)) if a != b), None)
    if apart is None:  # the same continuation
        assert choice.text == "".join(pieces)
    else:  # or apart first at a near-tie (the server's KV holds other chats' cells too)
        odds = top[apart]
        assert pieces[apart] in odds and odds[served[apart]] - odds[pieces[apart]] < NEAR_TIE
    assert choice.text.startswith(" ") and choice.text == "".join(served)
    assert choice.finish_reason == "length" and reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(tokens), 8)
    streamed = server.client().completions.create(
        model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text
    with pytest.raises(openai.BadRequestError, match="echo is not supported"):
        server.client().completions.create(model=MODEL, prompt=prompt, echo=True)
    status, _, body = server.post("/v1/completions", json.dumps({"model": MODEL}).encode())
    assert status == 400 and body["error"]["param"] == "prompt"
