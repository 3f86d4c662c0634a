"""Read a customer's answer to a yes/no confirmation question: yes, no, or unclear.

Only an unambiguous affirmation is a yes, because a yes runs an irreversible write (a
cancellation, a refund, a new address). A refusal, or the action itself negated ("don't cancel
it"), is a no. Everything else is unclear and the planner asks again: a hedge ("not sure", "I
think", "wait"), a question, a condition ("if it's free"), sarcasm ("yeah right"), a negation
beside a yes, or yes and no cues together. An answer with no cue at all is unclear too.

The cue lists live in `operators/data/confirmation_cues.yaml` (English, French, Spanish, German,
Italian, Portuguese, Dutch). Deterministic and pure: the same text always gets the same answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import yaml

__all__ = ["DEFAULT_CUES", "Confirmation", "ConfirmationCues", "classify_confirmation", "load_cues"]

DEFAULT_CUES: Path = Path(__file__).resolve().parents[1] / "data" / "confirmation_cues.yaml"
CATEGORIES: tuple[str, ...] = (
    "yes", "no", "no_action", "negation", "hedge", "question", "condition", "sarcasm", "neutral",
)  # fmt: skip
_SEPARATOR = r"[\s,\-]+"
# skin tones and emoji variation selectors: a thumbs-up is a thumbs-up in any shade
_EMOJI_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")
# "yesss", "nooooo": three or more of a letter is emphasis, never spelling
_ELONGATED = re.compile(r"([^\W\d_])\1{2,}")


class Confirmation(StrEnum):
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'").replace("\u2026", "...")
    text = _EMOJI_MODIFIERS.sub("", text)
    return _ELONGATED.sub(r"\1", text)


def _key(phrase: str) -> str:
    return re.sub(_SEPARATOR, " ", phrase).strip()


def _phrase_pattern(key: str) -> str:
    """Whole words only where the phrase has word edges: "?", "..." and emoji may touch a word ("yes?")."""
    body = _SEPARATOR.join(re.escape(word) for word in key.split(" "))
    before = r"(?<![\w'])" if re.match(r"[\w']", key) else ""
    after = r"(?![\w'])" if re.search(r"[\w']$", key) else ""
    return before + body + after


@dataclass(frozen=True)
class ConfirmationCues:
    """The compiled cue lists: one alternation, longest phrase first, and each phrase's category."""

    pattern: re.Pattern[str]
    category: Mapping[str, str]
    alone: Mapping[str, str]

    @classmethod
    def from_lists(cls, lists: Mapping[str, Iterable[str]], alone: Mapping[str, Iterable[str]]) -> ConfirmationCues:
        category: dict[str, str] = {}
        for name in CATEGORIES:
            for phrase in lists.get(name, ()):
                key = _key(_normalize(phrase))
                if key in category and category[key] != name:
                    raise ValueError(f"confirmation cue {phrase!r} is listed as both {category[key]} and {name}")
                category[key] = name
        # customers often type without accents; the bare spelling joins its phrase's category unless
        # it is a cue of its own (Spanish "sí" is yes, "si" is "if")
        for key, name in list(category.items()):
            category.setdefault(_strip_accents(key), name)
        alternatives = sorted(category, key=len, reverse=True)
        pattern = re.compile("|".join(_phrase_pattern(key) for key in alternatives))
        alone_words = {_normalize(word): name for name, words in alone.items() for word in words}
        return cls(pattern=pattern, category=category, alone=alone_words)

    def cues(self, text: str) -> set[str]:
        """The categories of the cues in the (normalised) text, each phrase matched once, longest first."""
        return {self.category[_key(match.group(0))] for match in self.pattern.finditer(text)}


def load_cues(path: Path = DEFAULT_CUES) -> ConfirmationCues:
    """Read and compile the cue file; raises ValueError naming the file when it is unusable."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "yes" not in data:
        raise ValueError(f"{path}: expected a mapping of cue category to phrases, with a 'yes' list")
    unknown = set(data) - set(CATEGORIES) - {"alone"}
    if unknown:
        raise ValueError(f"{path}: unknown cue categories {sorted(unknown)}")
    alone = data.get("alone") or {}
    if set(alone) - {"yes", "no"}:
        raise ValueError(f"{path}: 'alone' takes only 'yes' and 'no' lists")
    try:
        return ConfirmationCues.from_lists(data, alone)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


@lru_cache(maxsize=1)
def _default_cues() -> ConfirmationCues:
    return load_cues(DEFAULT_CUES)


def classify_confirmation(text: str, cues: ConfirmationCues | None = None) -> Confirmation:
    """Yes only for an unambiguous affirmation; a refusal or the action negated is no; else unclear."""
    cues = cues or _default_cues()
    normalized = _normalize(text)
    words = re.sub(r"[^\w']+", " ", normalized).strip()
    if words in cues.alone:
        # the lone word decides; punctuation and emoji around it still count ("si?" is a question)
        found = {cues.alone[words]} | cues.cues(re.sub(r"[\w']+", " ", normalized))
    else:
        found = cues.cues(normalized)
    return _decide(found)


def says_yes_or_no(text: str, cues: ConfirmationCues | None = None) -> bool:
    """Whether the message holds a yes or a no at all (a side question holds neither)."""
    cues = cues or _default_cues()
    normalized = _normalize(text)
    words = re.sub(r"[^\w']+", " ", normalized).strip()
    found = {cues.alone[words]} if words in cues.alone else set()
    return bool((found | cues.cues(normalized)) & {"yes", "no", "no_action"})


def _decide(found: set[str]) -> Confirmation:
    if "sarcasm" in found:
        return Confirmation.UNCLEAR
    if "no_action" in found and "condition" not in found:
        return Confirmation.NO
    if "condition" in found:
        return Confirmation.UNCLEAR
    if "no" in found:
        # declining changes nothing, so a hedged or questioning no is still a no; beside a yes it is a mix
        return Confirmation.UNCLEAR if "yes" in found else Confirmation.NO
    if found & {"question", "hedge", "negation"}:
        return Confirmation.UNCLEAR
    return Confirmation.YES if "yes" in found else Confirmation.UNCLEAR
