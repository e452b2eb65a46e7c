"""Text handling: incremental UTF-8 detokenizing, stop strings, replies, templates, model paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import (
    ChatMessage,
    LlamaWeights,
    ModelLoadError,
    TemplateError,
    model_template,
    template_for,
)
from core.models.gguf_header import GGML_BLOCKS, read_header
from core.models.model_path import resolve_model_path
from core.templates.chat_template import GEMMA, TRANSCRIPT
from core.text.detokenizer import IncrementalDetokenizer
from core.text.reply_stream import ReplyStream, StopReason
from core.text.stop_strings import StopStringMatcher


def feed_until_done(reply: ReplyStream, tokens: list[int]) -> None:
    for t in tokens:
        reply.feed(t)
        if reply.done:
            break


def byte_tokens(weights: LlamaWeights, data: bytes) -> list[int]:
    """The model's byte-fallback tokens that spell ``data`` one byte per token."""
    by_piece = {}
    for token in range(weights.n_vocab):
        piece = weights.token_piece(token)
        if len(piece) == 1 and piece[0] in data and piece not in by_piece:
            by_piece[piece] = token
    return [by_piece[bytes([b])] for b in data]


@pytest.fixture(scope="module")
def llama_emoji_tokens(weights: LlamaWeights) -> list[int]:
    return byte_tokens(weights, "🦙".encode())


def test_split_utf8_character_is_held_back_until_complete(
    weights: LlamaWeights, llama_emoji_tokens: list[int]
) -> None:
    assert len(llama_emoji_tokens) == 4  # four tokens, one byte each
    detok = IncrementalDetokenizer(weights.token_piece)
    out = [detok.feed(t) for t in llama_emoji_tokens]
    assert out == ["", "", "", "🦙"]
    assert detok.pending_bytes == 0


def test_incomplete_tail_becomes_a_replacement_char_on_flush(
    weights: LlamaWeights, llama_emoji_tokens: list[int]
) -> None:
    detok = IncrementalDetokenizer(weights.token_piece)
    assert detok.feed(llama_emoji_tokens[0]) == ""
    assert detok.flush() == "\ufffd"


def test_reply_stream_streams_split_characters_and_whole_words(
    weights: LlamaWeights, llama_emoji_tokens: list[int]
) -> None:
    reply = ReplyStream(weights, max_tokens=100)
    words = weights.tokenize(" Hello")
    pieces = [reply.feed(t) for t in [*words, *llama_emoji_tokens]]
    assert "".join(pieces) == "Hello🦙"  # leading whitespace is not shown
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_across_tokens_is_never_shown() -> None:
    matcher = StopStringMatcher(["\nUser:"])
    shown = [matcher.feed(chunk) for chunk in ["Paris", ".\n", "Us", "er: more"]]
    assert "".join(shown) == "Paris."
    assert matcher.stopped
    assert matcher.feed("after") == ""


def test_held_back_text_is_released_when_it_is_no_stop() -> None:
    matcher = StopStringMatcher(["\nUser:"])
    assert matcher.feed("a\nUs") == "a"
    assert matcher.feed("ually") == "\nUsually"
    assert matcher.feed("b\n") == "b"
    assert matcher.flush() == "\n"


def test_reply_stops_at_eog_stop_string_and_length(weights: LlamaWeights) -> None:
    eos = next(t for t in range(weights.n_vocab) if weights.is_eog(t))
    reply = ReplyStream(weights, max_tokens=10)
    for t in weights.tokenize(" Yes"):
        reply.feed(t)
    reply.feed(eos)
    assert reply.stop_reason is StopReason.END_OF_GENERATION and reply.text == "Yes"

    reply = ReplyStream(weights, stop_strings=["\nUser:"], max_tokens=50)
    tokens = weights.tokenize(" Paris.\nUser: next")
    feed_until_done(reply, tokens)
    assert reply.stop_reason is StopReason.STOP_STRING and reply.text == "Paris."
    in_kv = reply.token_count - 1  # the token that completed the stop was not decoded
    rewind, text = reply.settle(in_kv)
    kept = in_kv - rewind
    assert weights.detokenize(tokens[:kept]) + text == " Paris."

    reply = ReplyStream(weights, max_tokens=2)
    for t in weights.tokenize(" one two three"):
        reply.feed(t)
    assert reply.stop_reason is StopReason.MAX_TOKENS and reply.token_count == 2


def test_templates_render_turns_and_continuations() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", " Hello."),
        ChatMessage("user", "Bye"),
    ]
    assert TRANSCRIPT.render(messages) == (
        "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    )
    assert GEMMA.render(messages[:2]) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    # A saved reply gets back the space the model wrote after "Assistant:".
    assert TRANSCRIPT.reply_content("Hello. ") == " Hello."
    assert GEMMA.reply_content(" Hello.") == "Hello."


def test_template_choice() -> None:
    assert template_for(None).name == "transcript"
    assert template_for("{{ messages[0]['content'] }}").name == "jinja"  # the model's own
    assert template_for("{{ messages[0]['content'] }}", "chatml").name == "chatml"
    with pytest.raises(TemplateError, match="no chat template of its own"):
        template_for(None, "jinja")
    assert template_for(None, "chatml").name == "chatml"
    with pytest.raises(TemplateError, match="unknown chat template"):
        template_for(None, "nope")


def test_embedded_model_has_no_template_so_gets_the_transcript(weights: LlamaWeights) -> None:
    assert weights.chat_template is None
    assert model_template(weights).name == "transcript"


def test_missing_model_path_gives_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError) as info:
        resolve_model_path(missing)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "model file not found" in message


def test_non_gguf_file_gives_a_one_line_error(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a GGUF model file") as info:
        LlamaWeights.load(fake)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="not a file"):
        resolve_model_path(tmp_path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("cut in the header", "cut short .* inside its header"),
        ("cut in the tensor data", "cut short: its tensors need 253,113,024 bytes"),
        ("absurd counts", "cannot fit in the file"),
        ("unknown version", "GGUF version 99"),
    ],
)
def test_a_damaged_gguf_is_refused_before_llama_cpp_reads_it(
    tmp_path: Path, weights: LlamaWeights, damage: str, expected: str
) -> None:
    """A download cut short or a damaged header: one line naming the file, and llama.cpp
    never reads it (it trusts the header's sizes)."""
    data = bytearray(weights.path.read_bytes())
    if damage == "cut in the header":
        data = data[:4096]
    elif damage == "cut in the tensor data":
        data = data[: len(data) - 1_000_000]
    elif damage == "absurd counts":
        data[8:16] = (2**60).to_bytes(8, "little")  # the tensor count
    else:
        data[4:8] = (99).to_bytes(4, "little")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=expected) as info:
        LlamaWeights.load(broken)
    assert "\n" not in str(info.value) and str(broken) in str(info.value)


def test_the_header_reader_knows_the_sizes_gguf_py_knows() -> None:
    from gguf.constants import GGML_QUANT_SIZES

    theirs = {int(kind): size for kind, size in GGML_QUANT_SIZES.items()}
    theirs[9] = (32, 36)  # Q8_1: ggml's block has two f16 scales; gguf-py counts f32 ones
    assert {kind: GGML_BLOCKS[kind] for kind in theirs if kind in GGML_BLOCKS} == {
        kind: size for kind, size in theirs.items() if kind in GGML_BLOCKS
    }
    assert set(theirs) <= set(GGML_BLOCKS)


def test_the_embedded_model_s_header_accounts_for_every_byte(weights: LlamaWeights) -> None:
    header = read_header(weights.path)
    assert header.architecture == "gemma3" and header.tensors > 0
    assert header.data_end == weights.path.stat().st_size


def test_default_model_is_the_embedded_gemma(weights: LlamaWeights) -> None:
    assert weights.path.name == "gemma-3-270m-q4_k_m.gguf"
    assert "gemma3" in weights.description


def test_leading_blank_lines_do_not_trip_a_blank_line_stop(weights: LlamaWeights) -> None:
    reply = ReplyStream(weights, stop_strings=["\n\n"], max_tokens=50)
    tokens = weights.tokenize("\n\nParis.\n\nUser:")
    feed_until_done(reply, tokens)
    assert reply.text == "Paris." and reply.stop_reason is StopReason.STOP_STRING
    rewind, carry = reply.settle(reply.token_count - 1)
    kept = reply.token_count - 1 - rewind
    assert weights.detokenize(tokens[:kept]) + carry == "\n\nParis."


def test_an_unknown_architecture_is_refused_in_one_line(
    tmp_path: Path, weights: LlamaWeights
) -> None:
    """A well-formed GGUF of an architecture this llama.cpp does not know."""
    data = bytearray(weights.path.read_bytes())
    key = b"general.architecture"
    at = data.index(key) + len(key) + 4 + 8  # the key, the value type, the string length
    assert data[at : at + 6] == b"gemma3"
    data[at : at + 6] = b"nosuch"
    other = tmp_path / "other.gguf"
    other.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="unsupported architecture") as info:
        LlamaWeights.load(other)
    assert "\n" not in str(info.value)
