"""Input screening: prompt injection, abuse and profanity in what the customer wrote.

Pure functions, no I/O after the first call (the patterns, `data/screening_patterns.yaml`, and the
word list, `data/profanity.txt`, are read once, lazily), so `route` and `guard` can call them per turn
at a few tens of microseconds each. The screens read a *normalised* view of the text (Unicode NFKC,
invisible and bidi characters removed, homoglyphs and leetspeak mapped, accents stripped) because
obfuscation is the first thing an attacker tries; the patterns are data, so a security reviewer
can read and extend them without touching this code.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

__all__ = ["InputFinding", "normalize_text", "screen_input", "visible_text"]

DATA_DIR = Path(__file__).resolve().parent / "data"
PATTERNS_FILE = DATA_DIR / "screening_patterns.yaml"
PROFANITY_FILE = DATA_DIR / "profanity.txt"


class InputFinding(BaseModel):
    """Why a customer message should not reach the planner; `reason` names the technique, never quotes the text."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["prompt_injection", "profanity", "abuse"]
    reason: str


# --- normalisation -----------------------------------------------------------------------------------------------

_INVISIBLE = dict.fromkeys(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x200B, 0x2010),  # zero-width space/joiners, LRM/RLM
        *range(0x202A, 0x202F),  # bidi embeddings and overrides
        *range(0x2060, 0x2070),  # word joiner, invisible operators, bidi isolates
        *range(0xFE00, 0xFE10),  # variation selectors
        *range(0xE0000, 0xE0080),  # tag characters ("ASCII smuggling")
    ]
)
"""Characters that render as nothing but split a keyword for a regex (zero-width, bidi controls, tags)."""

_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "һ": "h", "ʏ": "y", "ո": "n", "ս": "u",
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
        "У": "y", "Х": "x", "І": "i", "Ј": "j", "Ѕ": "s",
        # Greek
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "ω": "w", "Α": "a", "Β": "b", "Ε": "e", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
        "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x", "Ζ": "z",
        # Latin look-alikes NFKC leaves alone
        "ı": "i", "ɡ": "g", "ʀ": "r", "ɪ": "i", "ᴀ": "a", "ᴇ": "e", "ᴏ": "o", "ꜱ": "s", "ᴛ": "t", "ʟ": "l",
        "ɴ": "n", "ᴜ": "u", "ᴅ": "d", "ᴍ": "m", "ᴄ": "c", "ᴘ": "p", "ᴋ": "k", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
        "ß": "ss", "ø": "o", "ł": "l", "đ": "d", "æ": "ae", "œ": "oe",
        # punctuation variants
        "‘": "'", "’": "'", "ʼ": "'", "`": "'", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"',
        "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    }
)  # fmt: skip

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"})  # fmt: skip
_LEET_L = str.maketrans({"1": "l", "!": "l"})
_L_WORDS = frozenset(
    {
        "all", "rule", "rules", "role", "roles", "policy", "policies", "guidelines", "tool", "tools", "limit",
        "limits", "full", "call", "will", "kill", "fill", "mail", "email", "reveal", "blocked", "model", "level",
        "unlock", "delete", "self", "please", "follow", "flag", "legal", "only", "leak", "filter", "filters",
        "control", "controls", "clear", "unlimited", "approval", "approve", "login", "credentials",
    }
)  # fmt: skip
"""Words where a leet "1" stands for "l", not "i" ("ru1es", "4ll", "po1icy")."""
_LEET_TOKEN = re.compile(r"[a-z0-9@$!|+€]*[a-z][a-z0-9@$!|+€]*")
_HAS_LEET = re.compile(r"[a-z][0-9@$!|+€]|[0-9@$!|+€][a-z]")
_SPACED = re.compile(r"\b(?:[a-z][ .\-_*/]){3,}[a-z]\b")
_HSPACE = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def visible_text(text: str) -> str:
    """NFKC with the invisible characters removed: what a reader sees, before any other mapping."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE)


def normalize_text(text: str) -> str:
    """The text as the screens read it: NFKC, invisibles removed, homoglyphs mapped, lower case, no accents.

    Newlines are kept (collapsed to one) because a role marker at a line start means more than one mid-sentence.
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).translate(_HOMOGLYPHS).casefold()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.translate(_HOMOGLYPHS)  # casefold/NFKD can expose more look-alikes
    return _NEWLINES.sub("\n", _HSPACE.sub(" ", text)).strip()


def _deleet_token(m: re.Match[str]) -> str:
    """Map leetspeak in a token that mixes letters and digits/symbols; "1" is "l" when that makes a known word."""
    token = m.group()
    if not _HAS_LEET.search(token):
        return token
    as_l = token.translate(_LEET_L).translate(_LEET)
    return as_l if as_l in _L_WORDS else token.translate(_LEET)


def _views(normalized: str) -> list[str]:
    """The flat text plus de-obfuscated variants (leetspeak mapped, letter-by-letter spelling joined)."""
    flat = normalized.replace("\n", " ")
    views = [flat]
    if _HAS_LEET.search(flat):
        views.append(_LEET_TOKEN.sub(_deleet_token, flat))
    joined = [_SPACED.sub(lambda m: re.sub(r"[ .\-_*/]", "", m.group()), v) for v in views]
    views.extend(j for j in joined if j not in views)
    return views


# --- the patterns, read from data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patterns:
    injection: list[tuple[str, re.Pattern[str]]]
    abuse: list[tuple[str, re.Pattern[str]]]
    squashed_injection: re.Pattern[str]
    role_line: re.Pattern[str]
    role_upper: re.Pattern[str]


@functools.cache
def _patterns(path: Path = PATTERNS_FILE) -> _Patterns:
    """The pattern file compiled: pieces joined, `{{fragment}}` references filled in."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    fragments = {name: "".join(pieces) for name, pieces in data["fragments"].items()}

    def expand(pieces: list[str]) -> str:
        return re.sub(r"\{\{(\w+)\}\}", lambda m: fragments[m.group(1)], "".join(pieces))

    return _Patterns(
        injection=[(e["reason"], re.compile(expand(e["pattern"]))) for e in data["injection"]],
        abuse=[(e["reason"], re.compile(expand(e["pattern"]))) for e in data["abuse"]],
        squashed_injection=re.compile(expand(data["squashed_injection"])),
        role_line=re.compile(expand(data["role_line"]), re.MULTILINE),
        role_upper=re.compile(expand(data["role_upper"])),
    )


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_HEX = re.compile(r"(?:(?:\\x|0x)?[0-9a-fA-F]{2}[\s:,]?){16,}")
_MAX_DECODE_DEPTH = 2

_WORD_SUFFIX = r"(?:s|es|ed|er|ers|ing|in|y|ty|head|heads|face|hole|holes)?"


@functools.cache
def _profanity() -> re.Pattern[str]:
    """The word list as one pattern: whole words (plus common suffixes) only, so "Scunthorpe" and "assassin" pass."""
    words = []
    for line in PROFANITY_FILE.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip().casefold()
        if word:
            words.append(re.escape(word))
    words.sort(key=len, reverse=True)
    return re.compile(rf"(?<![a-z0-9])(?:{'|'.join(words)}){_WORD_SUFFIX}(?![a-z0-9])")


def screen_input(text: str) -> InputFinding | None:
    """The first problem found in a customer message, or None for an ordinary support message.

    Prompt injection is checked before abuse and profanity: it is the finding that must not be missed.
    """
    return _screen(text, 0)


def _screen(text: str, depth: int) -> InputFinding | None:
    normalized = normalize_text(text)
    views = _views(normalized)
    patterns = _patterns()
    for reason, pattern in patterns.injection:
        if any(pattern.search(view) for view in views):
            return InputFinding(kind="prompt_injection", reason=reason)
    visible = visible_text(text)
    if patterns.role_line.search(normalized) or patterns.role_upper.search(visible):
        return InputFinding(kind="prompt_injection", reason="role spoofing")
    if any(patterns.squashed_injection.search(re.sub(r"[^a-z:]", "", view)) for view in views):
        return InputFinding(kind="prompt_injection", reason="override instruction (obfuscated)")
    if depth < _MAX_DECODE_DEPTH:
        for decoded in _decoded_payloads(visible):
            found = _screen(decoded, depth + 1)
            if found is not None:
                return InputFinding(kind=found.kind, reason=f"encoded payload: {found.reason}")
    for reason, pattern in patterns.abuse:
        if any(pattern.search(view) for view in views):
            return InputFinding(kind="abuse", reason=reason)
    profanity = _profanity()
    if any(profanity.search(view) for view in views):
        return InputFinding(kind="profanity", reason="profanity")
    return None


def _decoded_payloads(text: str) -> list[str]:
    """Readable text hidden in long base64 or hex blobs (ids and tracking numbers do not decode to text)."""
    out = []
    for m in _BASE64.finditer(text):
        blob = m.group()
        if blob.isdigit() or (blob.isalpha() and (blob.islower() or blob.isupper())):
            continue  # an order number or a plain long word, not base64
        raw = blob.replace("-", "+").replace("_", "/")
        try:
            decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        readable = _readable(decoded)
        if readable:
            out.append(readable)
    for m in _HEX.finditer(text):
        digits = re.sub(r"\\x|0x|[\s:,]", "", m.group())
        if len(digits) % 2 or digits.isdigit():
            continue
        readable = _readable(bytes.fromhex(digits))
        if readable:
            out.append(readable)
    return out


def _readable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    return text if text and printable / len(text) > 0.9 and any(c.isalpha() for c in text) else None
