"""Chat templates: a model's own Jinja template, rendered as llama.cpp and Hugging Face render
it; the whole chat rendered at every turn with only what differs from the KV decoded; templates
that refuse a chat give that chat a notice. Models with a template are copies of the embedded
GGUF with ``tokenizer.chat_template`` written in (tests/gguf_models.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gguf_models import (
    CHATML,
    GEMMA2,
    GEMMA_IT,
    LFM2,
    LLAMA3,
    MISTRAL,
    PHI3,
    PHI4_MINI,
    TEMPLATE_KEY,
    with_metadata,
)
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
from core.chat import ChatConfig, ChatEngine, ChatTree, NoticeKind, OpenChat, Restore, SendTurn
from core.chat.session import common_prefix
from core.templates.template_capabilities import (
    Adaptation,
    ProbeStopped,
    TemplateCapabilities,
    system_in_first_user,
)

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


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_message() -> None:
    """Gemma 2's template raises on a system message; as llama.cpp's --jinja does, the chat is
    adapted once the template has been asked (not guessed from a model's name)."""
    gemma2 = jinja(GEMMA2)
    assert gemma2.capabilities == TemplateCapabilities(system_role=False, typed_content=False)
    assert gemma2.render(CHAT) == (
        "<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert gemma2.adaptations(CHAT) == (Adaptation.SYSTEM_IN_FIRST_USER,)
    assert gemma2.adaptations(CHAT[1:]) == ()  # nothing to adapt without a system message
    assert gemma2.render(CHAT[1:2]) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert jinja(MISTRAL).render(CHAT[:2]) == "<bos>[INST] Be brief.\nHi [/INST]"
    # Templates that write a system message back are left alone, whatever they do with it.
    for family in (CHATML, GEMMA_IT, LLAMA3, PHI3, PHI4_MINI, LFM2):
        assert jinja(family).capabilities == TemplateCapabilities(system_role=True)
        assert jinja(family).adaptations(CHAT) == ()


def test_a_probe_stopped_by_a_limit_is_asked_again() -> None:
    """A probe that did not finish (the template hung, or no render process) says nothing
    of the template: the render goes on as if it had a system role, and the next asks again."""
    stops = iter([True, False, False, False])

    def trial(messages: Sequence[ChatMessage], typed: bool) -> str | None:
        if next(stops):
            raise ProbeStopped("did not finish in 2 s")
        return None if any(m.role == "system" for m in messages) else "<User Needle>"

    assert TemplateCapabilities.probe(trial) is None
    assert TemplateCapabilities.probe(trial) == TemplateCapabilities(system_role=False)


def test_system_text_waits_for_the_next_user_message_or_stands_as_one() -> None:
    system, user, assistant = (
        ChatMessage("system", "S"),
        ChatMessage("user", "U"),
        ChatMessage("assistant", "A"),
    )
    assert system_in_first_user([system, user]) == [ChatMessage("user", "S\nU")]
    assert system_in_first_user([system, system, user]) == [ChatMessage("user", "S\nS\nU")]
    assert system_in_first_user([system, ChatMessage("user", "")]) == [ChatMessage("user", "S")]
    assert system_in_first_user([system, assistant]) == [ChatMessage("user", "S"), assistant]
    assert system_in_first_user([user, system]) == [user, ChatMessage("user", "S")]
    assert system_in_first_user([user, assistant]) == [user, assistant]


def test_tools_are_undefined_in_a_chat_without_tools() -> None:
    """Phi-4-mini's template tests ``tools is defined`` and then iterates it: with tools None
    it failed on every plain chat ('NoneType' object is not iterable)."""
    phi4 = jinja(PHI4_MINI)
    assert phi4.render(CHAT[1:3]) == "<|user|>Hi<|end|><|assistant|>Hello.<|end|><|assistant|>"
    assert phi4.render(CHAT, add_generation_prompt=False) == (
        "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|>"
        "<|user|>Bye<|end|><eos>"
    )
    assert jinja("{{ tools is defined }}").render(CHAT) == "False"
    # Yet none, as llama.cpp and Hugging Face (tools=None) both read it: no empty tool list.
    assert jinja("{{ tools is none }}|{{ tools is not none }}").render(CHAT) == "True|False"


def test_generation_blocks_render_their_body() -> None:
    """LFM2.5's template wraps an assistant message in ``{% generation %}``, which Hugging
    Face writes as it is; Jinja alone does not know the tag."""
    assert jinja(LFM2).render(CHAT) == (
        "<bos><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    scoped = "{% set x = 1 %}{% generation %}{% set x = 2 %}[{{ x }}]{% endgeneration %}{{ x }}"
    assert jinja(scoped).render(CHAT) == "[2]1"  # a block of its own, as Hugging Face's


def test_a_template_that_reads_typed_content_gets_typed_parts() -> None:
    """A template that reads only ``content[0].text`` (MiniMax-Text-01's way) gets each
    message's text as one typed part."""
    typed = jinja(
        "{% for m in messages %}<{{ m.role }}>{{ m.content[0].text }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert typed.capabilities == TemplateCapabilities(system_role=True, typed_content=True)
    assert typed.render(CHAT[:2]) == "<system>Be brief.<user>Hi<assistant>"
    assert typed.adaptations(CHAT[1:2]) == (Adaptation.TYPED_CONTENT,)


def test_a_template_that_refuses_or_breaks_says_so_in_one_line() -> None:
    two_users = [ChatMessage("user", "Hi"), ChatMessage("user", "Bye")]
    with pytest.raises(TemplateError, match="roles must alternate") as refused:
        jinja(MISTRAL).render(two_users)
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
    assert time.monotonic() - started < 60  # far above the 2 s limit: a busy machine's slack
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
    assert "[adapted" not in out  # Gemma 3's template writes the system text itself


@pytest.fixture(scope="module")
def gemma2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models") / "gemma-2-it.gguf"
    return with_metadata(target, {TEMPLATE_KEY: GEMMA2, "general.name": "Gemma 2 IT test"})


def test_show_prompt_says_how_a_chat_was_adapted(
    gemma2_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(gemma2_model), "--show-prompt", "--system", "Be brief.", "Hi"]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n")
    assert f"[adapted: {Adaptation.SYSTEM_IN_FIRST_USER.description}]" in out
    assert demo_main([*argv[:3], "--system=", "Hi"]) == 0
    assert "[adapted" not in capsys.readouterr().out


def test_a_model_without_a_system_role_answers_every_default_persona(gemma2_model: Path) -> None:
    """All three default panes have a persona; with Gemma 2's template each was refused
    ("System role not supported") before the chat was adapted."""
    from tui.config import load_config  # the app's own defaults: the personas users start with

    panes = load_config().panes
    assert len(panes) == 3 and all(p.system.strip() for p in panes)
    with LlamaWeights.load(gemma2_model) as weights:
        executor = BatchedExecutor(weights, ContextParams(n_ctx=2048, n_seq_max=3))
        engine = ChatEngine(executor, model_template(weights))
        try:
            for pane in panes:
                engine.submit(OpenChat(pane.name, config(pane.name, pane.system)))
                engine.submit(SendTurn(pane.name, "What is the capital of France?"))
            frames = run_steps(engine)
        finally:
            executor.close()
    for pane in panes:
        assert not [f for f in frames if pane.name in f.deltas and f.deltas[pane.name].notice]
        assert shown(frames, pane.name).strip()


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
    for _, executor in made:
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
    before = engine.context("a")
    assert before is not None
    held = before.tokens
    # What the KV holds is exactly the chat rendered so far (the reply as the model wrote it).
    assert common_prefix(held, before.rendered) == len(held)
    decoded = engine.executor.stats.tokens_decoded
    engine.submit(SendTurn("a", "And of Italy?"))
    run_steps(engine)
    after = engine.context("a")
    assert after is not None and after.tokens[: len(held)] == held
    # The new turn's exact rendering, up to its reply, and nothing before it decoded again:
    # the turn, then the reply's tokens (the last one sampled need not be decoded).
    assert after.tokens[: after.reply_start] == after.rendered[: after.reply_start]
    new = len(after.tokens) - len(held)
    assert new - 1 <= engine.executor.stats.tokens_decoded - decoded <= new


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
    before = engine.context("a")
    assert before is not None
    held = len(before.tokens)
    decoded = engine.executor.stats.tokens_decoded
    engine.submit(SendTurn("a", "Name a colour."))
    frames = run_steps(engine)
    after = engine.context("a")
    assert after is not None
    assert after.tokens[: after.reply_start] == after.rendered[: after.reply_start]
    # "Turn 1" became "Turn 2": decoded again from there (within the first 6 tokens).
    assert held > 6 and engine.executor.stats.tokens_decoded - decoded > len(after.tokens) - 6
    assert shown(frames, "a").strip()


#: Refuses a chat that says "Hi" (a template's own rule), or never ends on a system prompt.
REFUSES_A_GREETING = (
    "{% if messages | selectattr('content', 'equalto', 'Hi') | list %}"
    "{{ raise_exception('no greetings, please') }}{% endif %}" + GEMMA_MARKERS
)
HANGS_ON_A_SYSTEM_PROMPT = (
    "{% if messages[0]['role'] == 'system' %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}" + GEMMA_MARKERS
)


@pytest.mark.parametrize(
    ("source", "words"),
    [(REFUSES_A_GREETING, "no greetings"), (HANGS_ON_A_SYSTEM_PROMPT, "did not finish in 2 s")],
    ids=["refuses", "hangs"],
)
def test_a_template_that_fails_on_a_chat_gives_it_a_notice_and_the_other_answers(
    engine_for: Callable[[str], ChatEngine], source: str, words: str
) -> None:
    """The chat the template fails on is told why (a hanging template in about the render
    process's time limit); the other chat answers."""
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
    assert time.monotonic() - started < 120  # not held up for ever (a busy machine is slow)


def test_a_resumed_chat_is_read_into_the_same_tokens(
    engine_for: Callable[[str], ChatEngine],
) -> None:
    """A chat whose KV state is gone is read again from its transcript: the model gets the
    tokens it had when the chat was live."""
    engine = engine_for(GEMMA_MARKERS)
    engine.submit(OpenChat("a", config("a")), SendTurn("a", "What is the capital of France?"))
    frames = run_steps(engine)
    live = engine.context("a")
    assert live is not None
    reply = shown(frames, "a").strip()
    again = engine_for(GEMMA_MARKERS)
    messages = [("user", "What is the capital of France?"), ("assistant", reply)]
    again.submit(OpenChat("a", config("a"), Restore(ChatTree.linear(messages))))
    run_steps(again)
    resumed = again.context("a")
    assert resumed is not None and resumed.in_step  # the transcript's exact rendering
    # The live chat's KV (its reply not closed yet) is where the resumed one begins.
    assert resumed.tokens[: len(live.tokens)] == live.tokens
