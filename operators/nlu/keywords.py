"""Keyword intent rules: the deliberately simple first-version intent classifier.

This is a stop-gap, not a model. It exists so the pipeline has a working NLU step (with honest confidences
that routing can act on) before the Triton-served NLU model lands. Everything here is pure Python over
hand-written rules in `operators/data/intent_keywords.yaml`, so it is cheap, deterministic and easy for a human
to read and tune. Entities and sentiment live in `operators/nlu/entities.py` and `operators/nlu/sentiment.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

DEFAULT_KEYWORDS_PATH: Path = Path(__file__).resolve().parents[1] / "data" / "intent_keywords.yaml"
OUT_OF_SCOPE: str = "out_of_scope"

_TOKEN_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+")
"""Letters and digits form separate tokens, so "order113542617735902" still reads as "order" + a number."""
_GAP = ".."
_MAX_GAP = 3
_NUMBER_WORD = "#"
_FUZZY_MIN_LEN = 5
_FUZZY_MIN_STEM = 6
"""Short stems are too promiscuous to fuzz: "remov*" one typo away would swallow "recovering"."""
_SPLIT_MIN_LEN = 6
_TOKEN_CACHE_SIZE = 50_000
_GLUE_WORDS: frozenset[str] = frozenset(
    {
        "i", "u", "a", "an", "the", "my", "me", "is", "of", "for", "with", "in", "on", "at", "and", "can", "do", "how",
        "what", "which", "wanna", "want", "need", "help", "your", "ur", "you", "it", "this", "that", "where", "when",
        "see", "get", "to",
    }
)  # fmt: skip
"""Function words people glue onto the next word ("tocancel", "withpayment"); known to the compound splitter."""

# How the classifier turns rule scores into a confidence (see `KeywordIntentClassifier._confidence`).
_STRENGTH_SCALE = 1.0
"""A winning score of 3 (one decisive phrase) gives strength ~0.95; a lone weight-1 hint ~0.63."""
_MIN_SCORE = 0.5
"""Below this total nothing is said to have matched: the text is out of scope."""


# --------------------------------------------------------------------------------------------------------------
# Intent classification
# --------------------------------------------------------------------------------------------------------------


def _tokenize(text: str) -> list[str]:
    """Lowercase word tokens; apostrophes are kept inside words so "don't" stays one token."""
    return _TOKEN_RE.findall(text.lower().replace("\u2019", "'"))


def _one_typo_apart(a: str, b: str) -> bool:
    """True when a and b differ by at most one insertion, deletion, substitution or adjacent swap.

    The first letter must agree (people rarely mistype it, and allowing it makes "wating" a "rating"), except for
    a swap of the first two letters ("erfund").
    """
    if a == b:
        return True
    if not a or not b or (a[0] != b[0] and a[:2] != b[1::-1]):
        return False
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        i, j = diffs if len(diffs) == 2 else (0, 0)
        return len(diffs) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    if la > lb:
        a, b = b, a
    # b is one longer than a: deleting one char of b must give a.
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


@lru_cache(maxsize=200_000)
def _word_matches(pattern_word: str, token: str) -> bool:
    """Match one pattern word (`a|b`, `stem*`, `#`) against one token, forgiving one typo in longer words."""
    for alt in pattern_word.split("|"):
        if alt == _NUMBER_WORD:
            if token.isdigit():
                return True
            continue
        if alt.endswith("*"):
            stem = alt[:-1]
            if token.startswith(stem):
                return True
            if len(stem) >= _FUZZY_MIN_STEM:
                for cut in (len(stem) - 1, len(stem), len(stem) + 1):
                    if cut <= len(token) and _one_typo_apart(stem, token[:cut]):
                        return True
        elif token == alt or (len(alt) >= _FUZZY_MIN_LEN and _one_typo_apart(alt, token)):
            return True
    return False


@dataclass(frozen=True)
class _Rule:
    """One line of the keyword file: a phrase pattern (or a raw regex) and the weight it adds to its intent."""

    source: str
    weight: float
    words: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, source: str, weight: float) -> _Rule:
        if source.startswith("re:"):
            return cls(source, weight, regex=re.compile(source[3:].strip()))
        words = tuple(source.lower().split())
        if not words or words[0] == _GAP or words[-1] == _GAP:
            raise ValueError(f"keyword rule {source!r}: empty, or starts/ends with a gap")
        return cls(source, weight, words=words)

    def match_from(self, tokens: list[str], pos: int, widx: int) -> bool:
        """Backtracking match of self.words[widx:] starting at tokens[pos]; `..` skips 0-3 tokens."""
        if widx == len(self.words):
            return True
        word = self.words[widx]
        if word == _GAP:
            return any(self.match_from(tokens, pos + skip, widx + 1) for skip in range(_MAX_GAP + 1))
        if pos >= len(tokens) or not _word_matches(word, tokens[pos]):
            return False
        return self.match_from(tokens, pos + 1, widx + 1)


class KeywordIntentClassifier:
    """Scores each intent by the summed weights of its matching keyword rules and reports how clearly one won."""

    def __init__(self, rules: dict[str, list[_Rule]]) -> None:
        self.rules = rules
        literals: set[str] = set(_GLUE_WORDS)
        stems: set[str] = set()
        for rule in (r for rs in rules.values() for r in rs):
            for alt in (a for w in rule.words for a in w.split("|")):
                if alt.endswith("*") and len(alt) > 3:
                    stems.add(alt[:-1])
                elif alt not in (_GAP, _NUMBER_WORD) and not alt.endswith("*"):
                    literals.add(alt)
        self._literals = frozenset(literals)
        self._stems = tuple(sorted(stems))
        # Index rules by their first word: per message, a token's list of first words that accept it
        # (cached per token) names the few rules worth the backtracking match at that position.
        self._rules_by_first: dict[str, list[tuple[str, _Rule]]] = {}
        self._regex_rules: list[tuple[str, _Rule]] = []
        for intent, intent_rules in rules.items():
            for rule in intent_rules:
                if rule.regex is not None:
                    self._regex_rules.append((intent, rule))
                else:
                    self._rules_by_first.setdefault(rule.words[0], []).append((intent, rule))
        self._split_cache: dict[str, tuple[str, ...]] = {}
        self._first_cache: dict[str, tuple[str, ...]] = {}
        # A pattern word accepts a token only through an alternative that starts with the token's first letter,
        # or its second (the swap `_one_typo_apart` forgives), or that takes any token (`#`, a bare `*`). A token
        # not seen before (order numbers, names, typos: most messages have one) is checked against those only,
        # not all first words: that scan was 4% of the agent worker's time in `bench --profile`.
        self._first_words_by_head: dict[str, list[str]] = {}
        self._first_words_any: list[str] = []
        for word in self._rules_by_first:
            heads = {alt.rstrip("*")[:1] for alt in word.split("|")}
            if heads & {"", _NUMBER_WORD}:
                self._first_words_any.append(word)
            for head in heads - {"", _NUMBER_WORD}:
                self._first_words_by_head.setdefault(head, []).append(word)
        self._first_word_order = {word: i for i, word in enumerate(self._rules_by_first)}

    def _known(self, word: str) -> bool:
        """Whether the rules (or the glue-word list) know this word, exactly or by a stem."""
        return word in self._literals or any(word.startswith(stem) for stem in self._stems)

    def _plain_word(self, word: str) -> bool:
        """A vocabulary word, or a stem plus an ordinary suffix (-ing, -ment): never split."""
        return word in self._literals or any(word.startswith(st) and len(word) - len(st) <= 4 for st in self._stems)

    def _split_token(self, tok: str) -> tuple[str, ...]:
        """Split a run-together word ("deliveryaddress", "whatsituations") when both halves are rule vocabulary.

        Only tokens the rules do not already know are split, so real words are left alone.
        """
        if len(tok) >= _SPLIT_MIN_LEN and tok.isalpha() and not self._plain_word(tok):
            for cut in range(1, len(tok) - 1):
                left, right = tok[:cut], tok[cut:]
                if (len(left) > 1 or left in _GLUE_WORDS) and self._known(left) and self._known(right):
                    return (left, right)
        return (tok,)

    def _split_glued(self, tokens: list[str]) -> list[str]:
        parts: list[str] = []
        for tok in tokens:
            split = self._split_cache.get(tok)
            if split is None:
                split = self._remember(self._split_cache, tok, self._split_token(tok))
            parts.extend(split)
        return parts

    def _first_words(self, token: str) -> tuple[str, ...]:
        """The rule first-words this token satisfies: only their rules can start matching here."""
        words = self._first_cache.get(token)
        if words is None:
            found = tuple(w for w in self._first_word_candidates(token) if _word_matches(w, token))
            words = self._remember(self._first_cache, token, found)
        return words

    def _first_word_candidates(self, token: str) -> list[str]:
        """The first words that may accept `token` (a superset of those that do), in the rules' order."""
        found = set(self._first_words_any)
        for head in token[:2]:
            found.update(self._first_words_by_head.get(head, ()))
        return sorted(found, key=self._first_word_order.__getitem__)

    @staticmethod
    def _remember(cache: dict[str, tuple[str, ...]], key: str, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(cache) >= _TOKEN_CACHE_SIZE:
            cache.clear()
        cache[key] = value
        return value

    @classmethod
    def load(cls, path: Path | None = None) -> KeywordIntentClassifier:
        """Read the YAML rule file (default: the one shipped next to this module)."""
        raw = yaml.safe_load((path or DEFAULT_KEYWORDS_PATH).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("keyword file must map intent -> {pattern: weight}")
        rules: dict[str, list[_Rule]] = {}
        for intent, entries in raw.items():
            if not isinstance(entries, dict):
                raise ValueError(f"intent {intent!r}: expected a mapping of pattern -> weight")
            rules[str(intent)] = [_Rule.parse(str(src), float(weight)) for src, weight in entries.items()]
        return cls(rules)

    @property
    def intents(self) -> list[str]:
        return list(self.rules)

    def scores(self, text: str) -> dict[str, float]:
        """Raw per-intent scores (only intents scoring above zero); useful when tuning the rule file."""
        lowered = " ".join(text.lower().replace("\u2019", "'").split())
        tokens = self._split_glued(_tokenize(lowered))
        totals: dict[str, float] = {}
        matched: set[int] = set()
        for pos, tok in enumerate(tokens):
            for word in self._first_words(tok):
                for intent, rule in self._rules_by_first[word]:
                    if id(rule) not in matched and rule.match_from(tokens, pos + 1, 1):
                        matched.add(id(rule))
                        totals[intent] = totals.get(intent, 0.0) + rule.weight
        for intent, rule in self._regex_rules:
            if rule.regex is not None and rule.regex.search(lowered):
                totals[intent] = totals.get(intent, 0.0) + rule.weight
        return {intent: score for intent, score in totals.items() if score > 0}

    @staticmethod
    def _confidence(score: float, best_other: float) -> float:
        """Strength of the evidence times its share against the strongest rival.

        Strength saturates with the absolute score (one weak keyword is not enough to act on); the share is
        score^2 / (score^2 + best rival^2), so a clear win keeps the strength, a tie halves it, and a
        weak hint for a rival (1 against 3) costs only a tenth.
        """
        strength = 1.0 - math.exp(-score / _STRENGTH_SCALE)
        return strength * score**2 / (score**2 + best_other**2)

    def classify(self, text: str) -> tuple[str, float, list[tuple[str, float]]]:
        """Return (intent, confidence in [0, 1], the three best candidates with their confidences, winner first).

        Nothing matching (or only negligible evidence) gives ("out_of_scope", 0.0, []).
        """
        scores = self.scores(text)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked or ranked[0][1] < _MIN_SCORE:
            return OUT_OF_SCOPE, 0.0, []
        top3: list[tuple[str, float]] = []
        for i, (intent, score) in enumerate(ranked[:3]):
            rival = ranked[1][1] if i == 0 and len(ranked) > 1 else (ranked[0][1] if i > 0 else 0.0)
            top3.append((intent, round(self._confidence(score, rival), 4)))
        return top3[0][0], top3[0][1], top3
