"""Malformed reply shapes for the fake NanoGPT's inference routes, and a corpus of clean ones (issue 16).

Each shape is an ``InferenceBehaviour.shape``: it sees the request as NanoGPT does and answers malformed
only while the request still has the problem a setting causes, the way a real model behaves:

- ``think_in_content``: the reasoning block in the reply text (an open model on ``/api/v1`` without
  reasoning parsing); NanoGPT's ``/api/v1thinking`` does this by itself for any reply with reasoning.
- ``speaks_for_user``: a transcript label for the user after the reply while the prompt has two messages
  in a row from the same side (Prompt Post-Processing "None"); merged roles get a clean reply.
- ``roles_must_alternate``: a provider's 400 while the roles after the system prompt do not alternate.
- ``user_first_required``: a provider's 400 while the first message after the system prompt is not the
  user's (ST's chats open with the character's greeting; only "Strict" puts a user message first).
- ``empty_over_output_limit``: an empty reply while ``max_tokens`` is above the model's output limit.
- ``cut_off_at_max_tokens``: a long reply cut at ``max_tokens`` words with ``finish_reason: "length"``.

``clean_replies`` builds varied replies that must raise no notice: role-play with colons, other
characters' names, times, lists, code blocks that quote transcripts, asterisk actions.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from tests.fakes.nanogpt_inference import InferenceRecord, Reply

Shape = Callable[[InferenceRecord, Reply], Reply | tuple[int, str] | None]

REASONING = "The user greets me. I should answer warmly and stay in character."
LONG_WORDS = 400


def _roles_repeat(record: InferenceRecord) -> bool:
    roles = record.roles
    return any(a == b for a, b in itertools.pairwise(roles))


def _alternates(record: InferenceRecord) -> bool:
    roles = list(record.roles)
    while roles and roles[0] == "system":
        roles.pop(0)
    return all(a != b for a, b in itertools.pairwise(roles)) and "system" not in roles


def think_in_content(record: InferenceRecord, reply: Reply) -> Reply:
    return Reply(f"<think>\n{REASONING}\n</think>\n\n{reply.text}")


def speaks_for_user(user_name: str = "User") -> Shape:
    def shape(record: InferenceRecord, reply: Reply) -> Reply | None:
        if not _roles_repeat(record):
            return None
        return Reply(f"{reply.text}\n\n**{user_name}:** I nod slowly and ask where we are going next.")

    return shape


def roles_must_alternate(record: InferenceRecord, reply: Reply) -> tuple[int, str] | None:
    if record.kind != "chat" or _alternates(record):
        return None
    return (400, "Conversation roles must alternate user/assistant/user/assistant/...")


def user_first_required(record: InferenceRecord, reply: Reply) -> tuple[int, str] | None:
    roles = [role for role in record.roles if role != "system"]
    if record.kind != "chat" or not roles or roles[0] == "user":
        return None
    return (400, "The first non-system message must be from the user")


def empty_over_output_limit(limit: int) -> Shape:
    def shape(record: InferenceRecord, reply: Reply) -> Reply | None:
        asked = record.body.get("max_tokens")
        if isinstance(asked, int) and asked > limit:
            return Reply("", completion_tokens=0)
        return None

    return shape


def cut_off_at_max_tokens(record: InferenceRecord, reply: Reply) -> Reply:
    words = [f"word{i}" for i in range(LONG_WORDS)]
    asked = record.body.get("max_tokens")
    if isinstance(asked, int) and asked < LONG_WORDS:
        return Reply(" ".join(words[:asked]), completion_tokens=asked, finish_reason="length")
    return Reply(" ".join(words) + ".", completion_tokens=LONG_WORDS)


# ---- clean replies ------------------------------------------------------------------------------------

_NPCS = ("Guard", "Mira", "Old Tom", "Captain Reyes", "The innkeeper", "Narrator", "Seraphina", "Kael")
_OPENERS = (
    '*{npc} leans against the doorway, arms crossed.* "You\'re late," she says.',
    "The rain hammers the tin roof as {npc} lights a lantern.",
    '"Well, that went better than expected." {npc} grins and pockets the key.',
    '*She thinks about it for a long moment, then shrugs.* "Fine. But I\'m driving."',
    "I think we should wait until dawn, {npc} suggests, glancing at the treeline.",
    "Thinking back on it later, {npc} would call it the strangest night of the voyage.",
)
_COLON_LINES = (
    "{npc}: Halt! Who goes there?",
    "Note: the bridge is out, so we take the river path.",
    "Time: 3:45 a.m. Location: the old mill.",
    "The sign reads: NO ENTRY AFTER DARK.",
    "Inventory: rope, two torches, a map with a coffee stain.",
    "Her reply was simple: no.",
    "Ratio of gold to silver: 1:16, as the merchant insists.",
    "**Status:** Tired but determined.",
    "Chapter 3: The Long Road",
    "Mission log, entry 12: supplies low, morale high.",
    "She scribbles a note: *Meet me at the docks.*",
    "Two options remain: fight, or run.",
)
_MIDDLES = (
    "The fire crackles. Somewhere outside, a dog barks twice and falls silent.",
    '{npc} counts the coins again: twelve silver, three copper. "Not enough," he mutters.',
    "A cold wind slips through the cracks, carrying the smell of salt and tar.",
    "- First, we find the map.\n- Second, we find the boat.\n- Third, we pray.",
    "Visit https://example.com/lore for the full history of the keep.",
    "The clock strikes 12:00 and everyone in the hall falls quiet.",
    '"Thinking:" she repeats, mocking his tone. "Is that what you call it?"',
    "He hums a tune you half-remember from childhood.",
    "```\nUser: ls -la\nHuman: what does this print?\n<think>not a real tag</think>\n```",
    "The letter ends abruptly: 'I will explain everything when I see you.'",
    "*You* could try the door, she suggests, *or* you could trust me for once.",
    "Reasoning with him was pointless; the mule had made up its mind.",
)
_ENDINGS = (
    "What do you do?",
    '"Your move," {npc} says.',
    "*She waits, watching you.*",
    "The road ahead is dark, but not empty.",
    "And with that, the door swings open. 🚪",
    "(OOC: Let me know if you want a time skip!)",
    "— to be continued —",
    "The end of the chapter; the beginning of something else.",
    "~fin~",
    'He laughs. "Deal."',
)


def clean_replies(count: int = 200, seed: int = 16) -> list[str]:
    """``count`` varied clean replies (deterministic for ``seed``), every one finished and in voice."""
    rng = random.Random(seed)
    out: list[str] = []
    for index in range(count):
        npc = rng.choice(_NPCS)
        parts = [rng.choice(_OPENERS)]
        for _ in range(rng.randint(1, 3)):
            parts.append(rng.choice(_COLON_LINES if rng.random() < 0.5 else _MIDDLES))
        parts.append(rng.choice(_ENDINGS))
        text = "\n\n".join(part.format(npc=npc) for part in parts)
        if index % 10 == 0:
            text = f"Seraphina: {text}"  # the character's own name first is not a role label
        out.append(text)
    return out
