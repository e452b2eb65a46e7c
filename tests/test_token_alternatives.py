"""Token probabilities and alternatives: what a choice records from a logits row, what the
engine hands out for each reply token on the real model, and a branch that goes on from an
alternative token."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from test_chat_engine import Driver, chat, make_driver  # noqa: F401 - the fixture, by name

from core.chat import BranchAtToken, OpenChat, SendTurn, TokenStat
from core.chat.token_stats import Alternative, ReplyOdds
from core.sampling.token_choice import ALTERNATIVES, POOL, token_choice


def softmax_of_top(row: np.ndarray, n: int) -> dict[int, float]:
    ids = np.argsort(-row)[:n]
    weights = np.exp(row[ids].astype(np.float64) - row[ids].max())
    return {int(i): float(w / weights.sum()) for i, w in zip(ids, weights, strict=True)}


def test_a_choice_has_the_models_probabilities_over_its_likeliest_tokens() -> None:
    rng = np.random.default_rng(5)
    row = rng.normal(0, 3, 5000).astype(np.float32)
    expected = softmax_of_top(row, POOL)
    best = int(row.argmax())
    choice = token_choice(row, best)
    assert choice.token == best and choice.probability == max(expected.values())
    assert len(choice.alternatives) == ALTERNATIVES
    probabilities = [p for _, p in choice.alternatives]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(p <= choice.probability for p in probabilities)
    for token, p in choice.alternatives:
        assert abs(p - expected[token]) < 1e-9
    assert choice.probability + sum(probabilities) <= 1.0 + 1e-9
    # A token drawn from beyond the likeliest: its own share, and the rest scaled to make room.
    far = int(np.argsort(row)[0])
    unlikely = token_choice(row, far)
    assert 0 <= unlikely.probability < min(probabilities)
    assert len(unlikely.alternatives) == ALTERNATIVES


def test_stats_survive_json_and_damage_reads_as_none() -> None:
    stats = [TokenStat(7, " Paris", 0.8123456, (Alternative(9, " Lyon", 0.1),))]
    odds = ReplyOdds.from_json(ReplyOdds("big", tuple(stats)).to_json())
    assert odds is not None and odds.model == "big"
    back = odds.tokens
    assert back[0].token == 7 and back[0].piece == " Paris" and back[0].alternatives[0].token == 9
    assert abs(back[0].probability - 0.8123) < 1e-9
    damaged = (
        "[[1, 2]]",
        "{}",
        "not json",
        '{"model": "", "tokens": [[1, "a", 7.0, []]]}',
        '{"model": "", "tokens": [["1", "a", 0.1, []]]}',
        '{"model": 3, "tokens": []}',
        "[" * 100_000,  # deeper than json can go
    )
    for text in damaged:
        assert ReplyOdds.from_json(text) is None


def test_a_token_chosen_instead_keeps_the_odds_it_was_chosen_from() -> None:
    """Issue #25: a reply branched at a token showed that token with no alternatives."""
    weighed = TokenStat(
        7, " Paris", 0.6, (Alternative(9, " Lyon", 0.2), Alternative(4, " Nice", 0.1))
    )
    chosen = weighed.replaced_by(weighed.alternatives[1])
    others = (Alternative(7, " Paris", 0.6), Alternative(9, " Lyon", 0.2))  # likeliest first
    assert chosen == TokenStat(4, " Nice", 0.1, others, forced=True)
    again = chosen.replaced_by(chosen.alternatives[0])  # back to the model's own token
    assert again.token == 7 and {a.token for a in again.alternatives} == {9, 4}
    odds = ReplyOdds.from_json(ReplyOdds("m", (weighed, chosen)).to_json())
    assert odds is not None and [t.forced for t in odds.tokens] == [False, True]
    assert odds.tokens[1].alternatives == chosen.alternatives
    for row in ('[1, "a", 0.1, [], false]', '[1, "a", 0.1, [], true, true]'):
        assert ReplyOdds.from_json(f'{{"model": "", "tokens": [{row}]}}') is None


def reply_stats(driver: Driver, chat_id: str) -> list[list[TokenStat]]:
    """Each reply's token stats, in order, from the frames."""
    replies: list[list[TokenStat]] = []
    for frame in driver.frames:
        delta = frame.deltas.get(chat_id)
        if delta is None:
            continue
        if delta.started:
            replies.append([])
        if replies:
            replies[-1].extend(delta.tokens)
    return replies


def test_every_reply_token_comes_with_its_odds_and_a_branch_goes_on_from_an_alternative(
    make_driver: Callable[..., Driver],  # noqa: F811
) -> None:
    driver = make_driver()
    driver.submit(OpenChat("c", chat("c", max_tokens=12, stop=())))
    driver.submit(SendTurn("c", "Name three colours."))
    driver.run_until(lambda: driver.replies("c") == 1)
    (stats,) = reply_stats(driver, "c")
    assert len(stats) == 12  # max_tokens: every one sampled, none an end of turn
    for stat in stats:  # greedy: the chosen token is the likeliest
        assert stat.alternatives and all(
            a.probability <= stat.probability for a in stat.alternatives
        )
        assert 0 < stat.probability <= 1
    held = driver.context("c")
    assert held is not None
    base = held.reply_start
    kept = list(held.tokens[base:])  # less any text the reply held back
    assert len(kept) >= 6 and [s.token for s in stats][: len(kept)] == kept
    tree = driver.tree("c")
    assert tree is not None and tree.head is not None
    reply = tree[tree.head]
    shown = reply.tokens  # the tree keeps them less a stop string's ("User:")
    assert shown == stats[: len(shown)]
    assert "".join(s.piece for s in shown).strip() == driver.text["c"].strip() == reply.text

    alternative = next(a for a in stats[2].alternatives if a.piece.strip().isalpha())
    prefix = [stats[0], stats[1], stats[2].replaced_by(alternative)]
    driver.submit(BranchAtToken("c", reply.id, 2, alternative.token))
    driver.run_until(lambda: driver.replies("c") == 2)
    _, branch = reply_stats(driver, "c")
    assert branch[:3] == prefix  # the first frame hands the prefix back
    # The chosen token comes with the odds it was chosen from, the model's token among them.
    assert branch[2].forced and stats[2].token in {a.token for a in branch[2].alternatives}
    held = driver.context("c")
    assert held is not None and len(held.turns) == 1  # a new version of the same reply
    assert list(held.tokens[base : base + 3]) == [s.token for s in prefix]
    assert held.tokens[base + 2] != stats[2].token
    begun = "".join(s.piece for s in prefix).strip()
    assert held.turns[0].reply.strip().startswith(begun)  # the reply goes on from it
