"""Chat templates: a model's own Jinja template, rendered as llama.cpp and Hugging Face render
it; the whole chat rendered at every turn with only what differs from the KV decoded; templates
that refuse a chat give that chat a notice. Models with a template are copies of the embedded
GGUF with ``tokenizer.chat_template`` written in (tests/gguf_models.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gguf_models import CHATML, GEMMA_IT, LLAMA3, MISTRAL, PHI3, TEMPLATE_KEY, with_metadata
from test_chat_engine import run_steps, shown

from core import (
    BatchedExecutor,
    ChatMessage,
    ContextParams,
    JinjaTemplate,
    LlamaWeights,
    SamplingParams,
    TemplateError,
    model_template,
)
from core.__main__ import main as demo_main
from core.chat import ChatConfig, ChatEngine, NoticeKind, OpenChat, Restore, SendTurn
from core.chat.session import common_prefix

GREEDY = SamplingParams(temperature=0.0)
CHAT = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello."),
    ChatMessage("user", "Bye"),
]
# Gemma's turn markers (special tokens in the embedded model's vocabulary), content as it is:
# every reply is rendered back exactly as the model wrote it.
GEMMA_MARKERS = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>assistant\\n' }}{% endif %}"
)


def jinja(source: str) -> JinjaTemplate:
    return JinjaTemplate(source, bos_token="<bos>", eos_token="<eos>")


def test_each_family_renders_as_its_models_expect() -> None:
    assert jinja(CHATML).render(CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert jinja(GEMMA_IT).render(CHAT) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert jinja(LLAMA3).render(CHAT[:2]) == (
        "<bos><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert jinja(PHI3).render(CHAT[1:3], add_generation_prompt=False) == (
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello.<|end|>\n<eos>"
    )
    assert jinja(MISTRAL).render(CHAT[1:]) == "<bos>[INST] Hi [/INST]Hello.<eos>[INST] Bye [/INST]"


def test_the_shared_system_prefix_is_found_or_none_where_the_system_is_folded_in() -> None:
    assert jinja(CHATML).system_prefix("Be brief.") == "<|im_start|>system\nBe brief.<|im_end|>\n"
    assert jinja(GEMMA_IT).system_prefix("Be brief.") is None  # folded into the first turn
    assert jinja(MISTRAL).system_prefix("Be brief.") is None  # refuses a system message
    assert jinja(CHATML).system_prefix("  ") is None


def test_a_template_that_refuses_or_breaks_says_so_in_one_line() -> None:
    with pytest.raises(TemplateError, match="roles must alternate") as refused:
        jinja(MISTRAL).render(CHAT)
    with pytest.raises(TemplateError, match="does not parse") as broken:
        jinja("{% for message in %}")
    with pytest.raises(TemplateError, match="failed: TypeError") as failing:
        jinja("{{ messages[0]['content'] + 1 }}").render(CHAT)
    # Only the template's raise_exception refuses a chat; its other errors are its bugs.
    with pytest.raises(TemplateError, match="failed: UndefinedError") as undefined:
        jinja("{{ messages[0].nope.deeper }}").render(CHAT)
    with pytest.raises(TemplateError, match="is 300,000 characters long") as huge:
        jinja("x" * 300_000)
    for error in (refused, broken, failing, undefined, huge):
        assert "\n" not in str(error.value) and "[model] template" in str(error.value)


def test_a_template_runs_sandboxed() -> None:
    """A GGUF is untrusted input: its template reaches no Python internals (an unsafe
    attribute is undefined, and using it is refused) and cannot change its messages."""
    for hostile in (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
        "{{ raise_exception.__globals__['os'] }}",
    ):
        with pytest.raises(TemplateError, match=r"unsafe|undefined"):
            jinja(hostile).render(CHAT)
    assert jinja("{{ raise_exception.__globals__ }}").render(CHAT) == ""  # nothing reached


#: Templates that would hang the decode thread or take the machine's memory, each with the
#: words of the limit that stops it: one of template_sandbox's checks, or the render
#: process's time ("did not finish") and memory ("needed") limits, which catch what the checks miss.
HOSTILE = [
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "did not finish",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "did not finish|needed",
    ),
    ("{{ 'x' * 10**10 }}", "repeats"),
    ("{{ ['x' * 1000000] * 1000 }}", "repeats"),
    ("{{ 'x'.encode() * 1200000000 }}", "repeats"),
    ("{{ 9 ** (9 ** 9) }}", "power"),
    ("{% set a = 3 ** 30000 %}{{ a * a * a }}", "multiplies"),
    ("{% set x = ('f' * 1000000)|int(base=16) %}{{ x // 7 }}", "divides"),
    ("{{ '%2000000000s' % 'x' }}", "width"),
    ("{{ '%(a)1200000000s' % {'a': 'x'} }}", "width"),
    ("{{ '%*s' % (2000000000, 'x') }}", "width"),
    ("{{ '{:>2000000000}'.format('x') }}", "width"),
    ("{{ '{:{}}'.format('x', '1200000000') }}", "width"),
    ("{{ 'x'.ljust(10**10) }}", "calls"),
    ("{{ 'x'|center(10**10) }}", "width"),
    ("{{ 'x'|indent(10**10) }}", "width"),
    ("{{ '%2000000000s'|format('x') }}", "width"),
    ("{{ [1]|tojson(indent=1200000000) }}", "indents"),
    ("{{ ('x' * 1000000)|replace('', 'y' * 100) }}", "replaces"),
    ("{{ ('x' * 1000000).replace('', 'y' * 100) }}", "replaces"),
    ("{{ ('a' * 1200)|replace('a', 'b' * 999999) }}", "replaces"),
    ("{{ range(100000)|map('string')|join('x' * 1000000) }}", "joins"),
    ("{{ ('x' * 1000000).join(range(100000)|map('string')) }}", "joins"),
    (
        "{% set ns = namespace(s='x' * 1000000) %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "joins",
    ),
    (
        "{% set s = 'x' * 1000000 %}{% set big %}{% for i in range(1200) %}{{ s }}"
        "{% endfor %}{% endset %}{{ big|length }}",
        "captures",
    ),
    ("{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}", "wrote more than"),
    # Past the checks, caught by the process's limits:
    ("{{ ([[0]] * 200000)|sum(start=[])|length }}", "did not finish"),
    (
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}"
        "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}"
        "{{ ns.a == ns.b }}",
        "did not finish",
    ),
    ("{{ ('\\t' * 1200).expandtabs(999999) }}", "needed"),
    ("{{ ('a' * 1200).translate({97: 'b' * 999999}) }}", "needed"),
    ("{{ ('a ' * 1200)|wordwrap(1, wrapstring='x' * 999999) }}", "needed"),
    ("{{ ('\\n' * 1200)|indent(999999, true, true) }}", "needed"),
]


@pytest.mark.parametrize(
    ("source", "words"), HOSTILE, ids=[f"{i}-{w}" for i, (_, w) in enumerate(HOSTILE)]
)
def test_a_template_that_would_hang_or_take_all_memory_is_stopped(source: str, words: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match=f"was stopped: .*({words})") as stopped:
        jinja(source).render(CHAT)
    assert time.monotonic() - started < 10
    assert "\n" not in str(stopped.value) and "[model] template" in str(stopped.value)


def test_the_limits_leave_a_long_chat_and_the_next_render_alone() -> None:
    """A chat far longer than any context renders whole, in the process started again after
    the one a stopped render killed."""
    long_chat = [
        ChatMessage("user" if i % 2 == 0 else "assistant", "word " * 2000) for i in range(200)
    ]
    with pytest.raises(TemplateError, match="did not finish"):
        jinja(HOSTILE[0][0]).render(CHAT)
    for family in (CHATML, GEMMA_IT, LLAMA3, PHI3):
        assert len(jinja(family).render(long_chat)) > 200 * 10000
    assert jinja(CHATML).render(CHAT).endswith("<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def gemma_it_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models") / "gemma-it.gguf"
    return with_metadata(target, {TEMPLATE_KEY: GEMMA_IT, "general.name": "Gemma IT test"})


def test_the_models_own_template_is_chosen_and_show_prompt_prints_it(
    gemma_it_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LlamaWeights.load(gemma_it_model) as weights:
        assert weights.chat_template == GEMMA_IT and weights.name == "Gemma IT test"
        template = model_template(weights)
        assert isinstance(template, JinjaTemplate)
        assert model_template(weights, "transcript").name == "transcript"
    argv = ["--model", str(gemma_it_model), "--show-prompt", "--system", "Be brief.", "Hi"]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    # The template spells <bos> itself: the tokenizer adds no second one.
    assert out.startswith(
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n\n["
    )
    assert out.count("<bos>") == 1 and "template jinja]" in out


@pytest.fixture
def engine_for(weights: LlamaWeights) -> Iterator[Callable[[str], ChatEngine]]:
    made: list[tuple[ChatEngine, BatchedExecutor]] = []

    def make(source: str) -> ChatEngine:
        executor = BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=2))
        template = JinjaTemplate(source, bos_token="<bos>", eos_token="<eos>")
        engine = ChatEngine(executor, template)
        made.append((engine, executor))
        return engine

    yield make
    for engine, executor in made:
        engine.shutdown()
        executor.close()


def config(name: str, system: str = "A helpful assistant answers briefly.") -> ChatConfig:
    return ChatConfig(name, system, GREEDY, max_tokens=24)


def test_a_second_turn_decodes_only_its_new_tokens(
    engine_for: Callable[[str], ChatEngine],
) -> None:
    engine = engine_for(GEMMA_MARKERS)
    engine.submit(OpenChat("a", config("a")), SendTurn("a", "What is the capital of France?"))
    first = run_steps(engine)
    assert shown(first, "a").strip()
    session = engine.session("a")
    assert session is not None
    held = session.conversation.tokens
    # What the KV holds is exactly the chat rendered so far (the reply as the model wrote it).
    rendered = session.prompt_tokens(session.exchanges)
    assert common_prefix(held, rendered) == len(held)
    engine.submit(SendTurn("a", "And of Italy?"))
    run_steps(engine, lambda frames: any("a" in f.deltas and f.deltas["a"].started for f in frames))
    target = session.prompt_tokens(session.exchanges[:-1], "And of Italy?")
    assert session.turn_base == len(held)  # nothing before it was decoded again
    assert session.reply_base - session.turn_base == len(target) - len(held)
    run_steps(engine)
    assert session.conversation.tokens[: len(target)] == tuple(target)


def test_a_template_that_rewrites_history_is_decoded_again_from_the_first_change(
    engine_for: Callable[[str], ChatEngine],
) -> None:
    """This template numbers the turns in its first line, so every turn changes the start of
    the prompt: the KV is cut back to the first token that differs, and holds the new render."""
    numbered = (
        "{{ bos_token }}Turn {{ (messages | length + 1) // 2 }}\n" + GEMMA_MARKERS.split("}}", 1)[1]
    )
    engine = engine_for(numbered)
    engine.submit(OpenChat("a", config("a", system="")), SendTurn("a", "Name a fruit."))
    run_steps(engine)
    session = engine.session("a")
    assert session is not None
    held = session.conversation.token_count
    engine.submit(SendTurn("a", "Name a colour."))
    frames = run_steps(engine)
    target = session.prompt_tokens(session.exchanges[:-1], "Name a colour.")
    assert 0 < session.turn_base < 6 < held  # "Turn 1" became "Turn 2": decoded from there
    assert session.conversation.tokens[: len(target)] == tuple(target)
    assert shown(frames, "a").strip()


#: Refuses chats with a system prompt (Mistral's rule), or never ends on them.
HANGS_ON_A_SYSTEM_PROMPT = (
    "{% if messages[0]['role'] == 'system' %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}" + GEMMA_MARKERS
)


@pytest.mark.parametrize(
    ("source", "words"),
    [(MISTRAL, "roles must alternate"), (HANGS_ON_A_SYSTEM_PROMPT, "did not finish in 2 s")],
    ids=["refuses", "hangs"],
)
def test_a_template_that_fails_on_a_chat_gives_it_a_notice_and_the_other_answers(
    engine_for: Callable[[str], ChatEngine], source: str, words: str
) -> None:
    """The chat with a system prompt is told why (a hanging template in about the render
    process's time limit); the chat without one answers."""
    engine = engine_for(source)
    started = time.monotonic()
    engine.submit(OpenChat("sys", config("sys")), OpenChat("plain", config("plain", system="")))
    engine.submit(SendTurn("sys", "Hi"), SendTurn("plain", "What is the capital of France?"))
    frames = run_steps(engine)
    notices = [f.deltas["sys"].notice for f in frames if "sys" in f.deltas]
    (notice,) = [n for n in notices if n is not None]
    assert notice.kind is NoticeKind.FAILED and words in notice.text()
    assert shown(frames, "plain").strip()
    assert not shown(frames, "sys")
    assert time.monotonic() - started < 30


def test_a_resumed_chat_is_read_into_the_same_tokens(
    engine_for: Callable[[str], ChatEngine],
) -> None:
    """A chat whose KV state is gone is read again from its transcript: the model gets the
    tokens it had when the chat was live."""
    engine = engine_for(GEMMA_MARKERS)
    engine.submit(OpenChat("a", config("a")), SendTurn("a", "What is the capital of France?"))
    frames = run_steps(engine)
    live = engine.session("a")
    assert live is not None
    reply = shown(frames, "a").strip()
    again = engine_for(GEMMA_MARKERS)
    messages = [("user", "What is the capital of France?"), ("assistant", reply)]
    again.submit(OpenChat("a", config("a"), Restore(messages, None)))
    run_steps(again)
    resumed = again.session("a")
    assert resumed is not None
    assert resumed.conversation.tokens == tuple(resumed.prompt_tokens(resumed.exchanges))
    # The live chat's KV (its reply not closed yet) is where the resumed one begins.
    held = live.conversation.tokens
    assert resumed.conversation.tokens[: len(held)] == held
