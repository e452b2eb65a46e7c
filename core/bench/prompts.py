"""The benchmark's prompts: short, distinct, and text a base model happily continues."""

from __future__ import annotations

SUBJECTS = (
    "lighthouse keeper who collected storms",
    "baker whose bread could predict the weather",
    "clockmaker living inside a tower",
    "cartographer mapping a city that moves",
    "beekeeper who spoke to the queen",
    "violinist travelling on a night train",
    "gardener growing glass flowers",
    "astronomer who lost a star",
    "ferryman on a river of fog",
    "librarian guarding a forbidden shelf",
    "blacksmith forging a silver key",
    "painter who could step into paintings",
    "fisherman who caught a talking pike",
    "engineer building a bridge to the moon",
    "shepherd counting clouds instead of sheep",
    "tailor sewing coats out of moonlight",
    "potter whose bowls never emptied",
    "pilot of the last airship",
    "miner who found a singing crystal",
    "chess player who never lost a game",
    "postman delivering letters from the future",
    "chef cooking for a dragon",
    "diver exploring a sunken library",
    "inventor of a machine that dreams",
    "nurse on a mountain village",
    "detective chasing a stolen shadow",
    "farmer whose scarecrow came alive",
    "sailor charting an unknown sea",
    "teacher of a school for ghosts",
    "composer writing a song for rain",
    "monk copying a book that rewrote itself",
    "child who befriended an old robot",
)


def short_prompts(count: int) -> list[str]:
    """``count`` distinct story openings of about 15 tokens each."""
    return [
        f"Chapter {i + 1}. The story of the {SUBJECTS[i % len(SUBJECTS)]}:\n" for i in range(count)
    ]


def long_text() -> str:
    """Plenty of ordinary prose to cut a long prompt from."""
    sentences = [
        f"The {subject} kept a journal, and every entry began with the weather."
        for subject in SUBJECTS
    ]
    return " ".join(sentences * 8)
