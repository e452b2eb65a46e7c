"""The prompt cache's bookkeeping: which kept chat a request's conversation finds, and which
kept chats are closed for what (tokens, sequences, a newer copy, turns shifted out)."""

from __future__ import annotations

from api.prompt_cache import KeptChat, PromptCache, comparable

TURN = (("user", "Hi"), ("assistant", "Hello."))


def kept(chat_id: str, messages: tuple[tuple[str, str], ...] = TURN, tokens: int = 10) -> KeptChat:
    return KeptChat(chat_id, "", "Be brief.", comparable(messages), tokens)


def test_a_conversation_finds_its_chat_once_and_only_by_every_message() -> None:
    cache = PromptCache(100)
    assert cache.keep(kept("a")) == []
    assert cache.take(
        "", "Be brief.", comparable([("user", "Hi"), ("assistant", " Hello.\n")])
    ) == kept("a")
    assert cache.take("", "Be brief.", comparable(TURN)) is None  # taken: its branch goes on
    cache.keep(kept("b"))
    assert cache.take("", "Be terse.", comparable(TURN)) is None  # another system prompt
    assert cache.take("other", "Be brief.", comparable(TURN)) is None  # another model
    assert cache.take("", "Be brief.", comparable(TURN[:1])) is None  # a prefix is not enough
    assert (cache.hits, cache.misses) == (1, 4) and "b" in cache


def test_tokens_over_the_budget_close_the_least_recently_kept() -> None:
    cache = PromptCache(25)
    cache.keep(kept("a", (("user", "1"),)))
    cache.keep(kept("b", (("user", "2"),)))
    assert cache.keep(kept("c", (("user", "3"),))) == ["a"]
    assert cache.keep(kept("huge", (("user", "4"),), tokens=26)) == ["huge"]  # never fits
    assert cache.tokens == 20 and len(cache) == 2


def test_a_newer_chat_of_the_same_conversation_replaces_the_older() -> None:
    cache = PromptCache(100)
    cache.keep(kept("a"))
    assert cache.keep(kept("b")) == ["a"]
    assert len(cache) == 1 and "b" in cache


def test_the_oldest_makes_way_and_a_shifted_chat_is_dropped() -> None:
    cache = PromptCache(100)
    cache.keep(kept("a", (("user", "1"),)))
    cache.keep(kept("b", (("user", "2"),)))
    assert cache.drop("b") and not cache.drop("b")
    assert cache.oldest() == "a" and cache.oldest() is None
