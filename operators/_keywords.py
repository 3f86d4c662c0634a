"""Keyword intent rules, regex entities and a tiny sentiment lexicon: the deliberately simple first-version NLU.

This is a stop-gap, not a model. It exists so the pipeline has a working NLU step (with honest confidences
that routing can act on) before the Triton-served NLU model lands; a later issue replaces all three helpers
with that model. Everything here is pure Python over hand-written rules in `operators/data/intent_keywords.yaml`
and small built-in tables, so it is cheap, deterministic and easy for a human to read and tune.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from schemas.nlu import Entity, Sentiment

DEFAULT_KEYWORDS_PATH: Path = Path(__file__).resolve().parent / "data" / "intent_keywords.yaml"
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
            found = tuple(w for w in self._rules_by_first if _word_matches(w, token))
            words = self._remember(self._first_cache, token, found)
        return words

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


# --------------------------------------------------------------------------------------------------------------
# Entity extraction
# --------------------------------------------------------------------------------------------------------------

ENTITY_CONFIDENCE: dict[str, float] = {
    "email": 0.9,
    "phone_number": 0.75,
    "invoice_number": 0.8,
    "amount": 0.8,
    "order_number": 0.7,
}
"""How far each regex can be trusted: emails are unambiguous, a bare digit run could be many things."""

_CURRENCY_WORDS = r"(?:dollars?|bucks|usd|eur|euros?|gbp|pounds?|cents?)"
_NUMBER = r"\d+(?:[.,]\d{3})*(?:[.,]\d{1,2})?"

_EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE_RE = re.compile(
    r"(?<![\w#])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?!\w)"
    r"|(?<![\w#])\+\d{8,15}(?!\w)"
)
_PHONE_CUE_RE = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|call me|reach me|text me)\b\W*(?:\w+\W+){0,2}$", re.I)
_DATE_RE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_INVOICE_RE = re.compile(
    r"\b(?:bills?|bil|biull|invoic\w*|invoce)\b(?:\s+(?:number|no\.?|nr\.?|num|id)\b)?\s*(?::\s*)?"
    r"(?P<value>#?(?:inv-?)?\d{3,}|inv-?\d{3,})\b",
    re.I,
)
_AMOUNT_RE = re.compile(
    rf"(?:[$€£]\s?{_NUMBER}"
    rf"|\b(?:usd|eur|gbp)\s?{_NUMBER}"
    rf"|\b{_NUMBER}\s?(?:[$€£]|{_CURRENCY_WORDS}\b))",
    re.I,
)
_ORDER_RE = re.compile(r"(?:(?<=order)|(?<=purchase)|(?<![\w$€£.,]))#?\d{5,}(?![\w.,]\d)", re.I)
"""5+ digits, optionally after #; also when glued to "order"/"purchase" ("order113542617735902")."""


def _phone_spans(text: str) -> list[tuple[int, int]]:
    """Phone numbers: digit groups with separators or a leading +, at least 7 digits in all.

    A bare run of digits is only a phone number when a cue word ("phone", "call me at") precedes it; otherwise it
    is far more likely an order number in a support chat.
    """
    spans = []
    for m in _PHONE_RE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        if 7 <= digits <= 15 and not _DATE_RE.match(m.group()):
            spans.append((m.start(), m.end()))
    for m in re.finditer(r"(?<![\w#])\d{7,15}(?!\w)", text):
        if _PHONE_CUE_RE.search(text[: m.start()]):
            spans.append((m.start(), m.end()))
    return spans


def extract_entities(text: str) -> list[Entity]:
    """Find emails, phone numbers, invoice numbers, amounts and order numbers, with exact character spans.

    Types are tried most-specific first and a later type never overlaps an earlier one, so "$12345" is an amount
    and "bill #00108" an invoice number rather than order numbers. Results are sorted by position.
    """
    found: list[Entity] = []

    def add(kind: str, start: int, end: int) -> None:
        if any(start < e.end and e.start < end for e in found):
            return
        found.append(Entity(type=kind, value=text[start:end], start=start, end=end, confidence=ENTITY_CONFIDENCE[kind]))

    for m in _EMAIL_RE.finditer(text):
        add("email", m.start(), m.end())
    for start, end in _phone_spans(text):
        add("phone_number", start, end)
    for m in _INVOICE_RE.finditer(text):
        add("invoice_number", m.start("value"), m.end("value"))
    for m in _AMOUNT_RE.finditer(text):
        add("amount", m.start(), m.end())
    for m in _ORDER_RE.finditer(text):
        add("order_number", m.start(), m.end())
    return sorted(found, key=lambda e: e.start)


# --------------------------------------------------------------------------------------------------------------
# Sentiment
# --------------------------------------------------------------------------------------------------------------

_LEXICON: dict[str, float] = {
    # positive
    "good": 1.9, "great": 3.1, "excellent": 3.2, "amazing": 3.0, "awesome": 3.1, "fantastic": 3.2,
    "wonderful": 3.1, "perfect": 3.0, "love": 3.2, "loved": 3.0, "like": 1.5, "liked": 1.6, "happy": 2.7,
    "glad": 2.0, "pleased": 2.2, "satisfied": 2.0, "thanks": 1.9, "thank": 1.5, "thx": 1.5, "appreciate": 2.0,
    "helpful": 1.9, "nice": 1.8, "fast": 1.0, "quick": 1.0, "easy": 1.5, "best": 3.0, "recommend": 1.5,
    "resolved": 1.5, "works": 1.0, "brilliant": 3.0, "kind": 1.8, "friendly": 2.0, "smooth": 1.5,
    # negative
    "bad": -2.5, "terrible": -3.1, "awful": -3.1, "horrible": -3.2, "worst": -3.2, "poor": -2.1, "hate": -3.0,
    "angry": -2.7, "furious": -3.1, "upset": -2.3, "annoyed": -2.2, "annoying": -2.2, "frustrated": -2.4,
    "frustrating": -2.4, "disappointed": -2.4, "disappointing": -2.4, "unhappy": -2.3, "useless": -2.5,
    "broken": -1.8, "damaged": -1.8, "late": -1.2, "slow": -1.5, "wrong": -1.5, "never": -0.5, "problem": -1.2,
    "problems": -1.2, "issue": -0.8, "issues": -0.8, "error": -1.2, "errors": -1.2, "fail": -2.0, "failed": -2.0,
    "scam": -3.0, "ridiculous": -2.5, "unacceptable": -2.8, "rude": -2.5, "waste": -2.2, "lost": -1.5,
    "missing": -1.3, "complaint": -1.5, "refuse": -1.5, "sucks": -2.8, "stupid": -2.5,
    # profanity: in a support chat it signals an upset customer
    "damn": -2.0, "goddamn": -2.3, "bloody": -2.0, "fucking": -2.6, "fuck": -2.8, "shit": -2.6, "crap": -2.4,
    "hell": -1.5, "wtf": -2.6,
}  # fmt: skip
_INTENSIFIERS: dict[str, float] = {
    "very": 1.3, "really": 1.3, "so": 1.25, "extremely": 1.5, "totally": 1.3, "absolutely": 1.4, "incredibly": 1.5,
    "super": 1.3, "too": 1.2, "completely": 1.4, "utterly": 1.5, "quite": 1.1,
}  # fmt: skip
_DAMPENERS: dict[str, float] = {"slightly": 0.6, "somewhat": 0.7, "kinda": 0.7, "bit": 0.7, "little": 0.7}
_NEGATIONS: frozenset[str] = frozenset(
    {
        "not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "hardly", "barely", "cannot",
        "cant", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "wont", "wouldnt", "shouldnt",
        "couldnt", "aint", "havent", "hasnt",
    }
)  # fmt: skip
_NEGATION_SCOPE = 3
_NEGATION_FACTOR = -0.74
_NORMALIZE_ALPHA = 15.0
NEGATIVE_THRESHOLD: float = -0.3
POSITIVE_THRESHOLD: float = 0.3


def simple_sentiment(text: str) -> Sentiment:
    """Lexicon sentiment in the spirit of VADER, small enough to read in one sitting.

    Each lexicon word adds its valence, scaled by an intensifier/dampener right before it and flipped (and
    softened) by a negation within the three words before it. Exclamation marks amplify slightly. The sum is
    squashed into [-1, 1] with x / sqrt(x^2 + 15), and labelled negative at <= -0.3, positive at >= 0.3.
    """
    tokens = [t.replace("'", "") for t in _tokenize(text)]
    total = 0.0
    for i, tok in enumerate(tokens):
        valence = _LEXICON.get(tok)
        if valence is None:
            continue
        if i > 0:
            valence *= _INTENSIFIERS.get(tokens[i - 1], 1.0) * _DAMPENERS.get(tokens[i - 1], 1.0)
        if any(t in _NEGATIONS for t in tokens[max(0, i - _NEGATION_SCOPE) : i]):
            valence *= _NEGATION_FACTOR
        total += valence
    if total:
        total *= 1.0 + 0.1 * min(text.count("!"), 3)
    score = total / math.sqrt(total * total + _NORMALIZE_ALPHA) if total else 0.0
    score = max(-1.0, min(1.0, round(score, 4)))
    label = "negative" if score <= NEGATIVE_THRESHOLD else "positive" if score >= POSITIVE_THRESHOLD else "neutral"
    return Sentiment(label=label, score=score)
