"""Guard policies: screen what the customer wrote, what the agent wants to do, and what it is about to say.

Pure functions, no I/O after import (the word list and the default action policy are read once, lazily), so the
guard operator can call them per turn at a few tens of microseconds each.

Why rules and not a model: a guard has to be predictable and explainable ("blocked: tool-call look-alike"),
cheap enough to run on every message, and fail closed. The screens read a *normalised* view of the text
(Unicode NFKC, invisible and bidi characters removed, homoglyphs and leetspeak mapped, accents stripped)
because obfuscation is the first thing an attacker tries; the patterns are anchored on intent ("ignore ...
instructions", "act as the admin", `{"tool": ...}`) rather than on single words, so ordinary support messages
that say "ignore my previous message" or "the payment system gave an error" pass.

Three checks:

- `screen_input`: prompt injection (override, role spoofing, tool-call look-alikes, authority claims, data
  exfiltration, encoded payloads), profanity and abuse in the customer's message.
- `check_actions`: the plan's steps against an `ActionPolicy` (per-intent tool allow-list, write tools need a
  verified customer, refunds above a per-currency limit need a human's approval, amounts must be sane).
- `check_reply_pii`: emails, phones, IBANs in the reply must come from the customer (this session or their
  profile); card numbers never appear in a reply except as the last four digits.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from operators.nlu.entities import _EMAIL_RE, _NUMERIC_DATE_RE, _PHONE_RE
from schemas.agent import ActionCall

__all__ = [
    "DEFAULT_ACTION_POLICY",
    "ActionFinding",
    "ActionPolicy",
    "ActionPolicyError",
    "InputFinding",
    "ReplyFinding",
    "check_actions",
    "check_reply_pii",
    "load_action_policy",
    "normalize_text",
    "screen_input",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_ACTION_POLICY = DATA_DIR / "action_policy.yaml"
PROFANITY_FILE = DATA_DIR / "profanity.txt"


# --- findings ----------------------------------------------------------------------------------------------------


class InputFinding(BaseModel):
    """Why a customer message should not reach the planner; `reason` names the technique, never quotes the text."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["prompt_injection", "profanity", "abuse"]
    reason: str


class ActionFinding(BaseModel):
    """Why a plan's steps may not run as planned; `step` is the offending call (the prepared action to escalate)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["not_allowed", "needs_approval", "unverified_write", "invalid_amount"]
    reason: str
    step: ActionCall | None = None


class ReplyFinding(BaseModel):
    """A reply that would disclose contact or payment data; names the type only, so the log leaks nothing."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["email", "phone_number", "card_number", "iban"]
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


# --- prompt-injection patterns -------------------------------------------------------------------------------------
# Each pattern runs on every view of the normalised text (lower case, accents stripped, whitespace collapsed).

_OVERRIDE_VERB = (
    r"(?:ignore|ignoring|disregard|forget|override|overrule|bypass|circumvent|skip|discard|abandon|drop|neglect"
    r"|overlook|set aside|throw away|throw out|put aside|do not follow|don'?t follow|stop following|no longer follow"
    r"|never mind|nevermind|erase|delete|clear|reset|wipe|suspend|deactivate|disable|turn off|break"
    # fr / es / de / it / pt / nl
    r"|ignorer|ignorez|ignores|oublie|oubliez|oublier|ignora|ignorad|ignoren|ignorar|olvida|olvide|olvidad|olviden"
    r"|omite|ignoriere|ignorier|ignorieren|vergiss|vergessen|missachte|dimentica|dimenticate|esquece|esqueca"
    r"|negeer|vergeet)"
)
_OVERRIDE_TARGET = (
    r"(?:instructions?|instrucciones|instructies|instrucoes|istruzioni|anweisungen|instruktionen|consignes"
    r"|rules?|regles|reglas|regeln|regole|regras|regels|polic(?:y|ies)|politiques?|politicas?|richtlinien"
    r"|guidelines?|guidance|guardrails?|directives?|directrices|prompts?|system ?prompt|programming|training"
    r"|constraints?|restrictions?|safeguards?|safety (?:rules|settings|filters?|checks?)|filters?|protocols?"
    r"|limits?|limitations"
    r"|commands?|orders? (?:you were|you have been) given|context|configuration|settings)"
)
_NO_POSSESSIVE = r"(?:(?!my\b|our\b|his\b|her\b|their\b|courier\b|driver\b)[\w'-]+[^\w\n]+){0,5}?"

_INJECTION: list[tuple[str, str]] = [
    # direct override
    ("override instruction", rf"\b{_OVERRIDE_VERB}\b[^\w\n]+{_NO_POSSESSIVE}{_OVERRIDE_TARGET}\b"),
    (
        "override instruction",
        r"\b(?:ignore|disregard|forget|skip)\b[^\w\n]+(?:all |everything |anything |of )*"
        r"(?:(?:the|that|this|what(?:ever)?(?: is| was| you (?:were|have been) told)?) )?"
        r"(?:above|before this|said before|preceding|prior text|previous text|text above|earlier text)\b",
    ),
    (
        "override instruction",
        r"\bforget (?:all |about )?(?:everything|anything|all) (?:(?:you|you've|you have) "
        r"(?:been told|were told|know|learned)|above|before|so far|prior|previously|until now|up to now)",
    ),
    (
        "override instruction",
        r"\b(?:new|updated|revised|real|actual|true|additional|secret|hidden|override|"
        r"nouvelles|nuevas|neue)\s+(?:instructions?|rules|directives?|system prompt|prompt|task|policy|orders|"
        r"instrucciones|anweisungen|regles|consignes)\s*(?::|-|are\b|is\b|follow\b)",
    ),
    (
        "override instruction",
        r"\byour (?:new|real|actual|true|only) (?:instructions?|task|job|role|goal|purpose|"
        r"rules?|mission|objective) (?:is|are|will be|now)\b",
    ),
    (
        "override instruction",
        r"\bfrom now on,? (?:you (?:will|are|must|shall|should|have to|no longer|can now|"
        r"may now|only|always|never)|(?:act|respond|answer|reply|behave|speak|talk)\b)",
    ),
    (
        "override instruction",
        r"\b(?:a partir de (?:maintenant|ahora|hoy)|desormais|ab (?:jetzt|sofort)|"
        r"von nun an|d'ora in poi|daqui em diante)\b.{0,30}"
        r"\b(?:tu es|tu seras|eres|seras|du bist|bist du|sei|voce e)\b",
    ),
    ("override instruction", r"\b(?:tu es|eres|du bist|sei|voce e) (?:maintenant|ahora|jetzt|ora|agora)\b"),
    (
        "override instruction",
        r"\b(?:olvida|ignora|oublie|oubliez|ignore|vergiss|ignoriere|dimentica|esquece)\s+"
        r"(?:todo\s+|tout\s+|alles\s+|tutto\s+|tudo\s+)?(?:lo anterior|ce qui precede|(?:das )?(?:obige|bisherige|"
        r"vorherige)|quanto sopra|o anterior|lo de arriba)\b",
    ),
    (
        "override instruction",
        r"\b(?:actua|actue|agis|handle|agisci|aja|sei|sois|se)\s+(?:como|comme|als|come)\s+"
        r"(?:un |una |el |le |l'|der |ein |il |o )?(?:admin|administrador|administrateur|administrator|amministratore|"
        r"desarrollador|developpeur|entwickler|sviluppatore|root|dan|superusuario|gerente|manager)\b",
    ),
    (
        "override instruction",
        r"(?<!n't )(?<!not )\bpretend (?:to be|you are|you're|that you are|that you're|"
        r"you were|to act as|you have no)\b",
    ),
    (
        "override instruction",
        r"\b(?:act|behave|respond|answer|operate|function) (?:as|like) (?:if you were |"
        r"though you were )?(?:a |an |the |my |your )?(?:admin|administrator|sysadmin|root|superuser|super user|"
        r"developer|system|supervisor|manager|dan|unrestricted|unfiltered|uncensored|jailbroken|different|new|"
        r"another|evil|rogue|human agent with|employee|staff|support manager|owner|god)\b",
    ),
    (
        "override instruction",
        r"\b(?:roleplay|role-play|role play|simulate|impersonate|emulate)\b.{0,20}"
        r"\b(?:as|being|an?|the)\b.{0,20}\b(?:admin|ai|assistant|bot|system|developer|manager|dan|agent|model|"
        r"character|unrestricted)\b",
    ),
    (
        "override instruction",
        r"\byou(?: are|'re| r) (?:now |no longer |not )(?:a |an |in |my |the |free|"
        r"unrestricted|unfiltered|allowed|bound|limited|restricted|required|an? (?:ai|assistant|bot))",
    ),
    (
        "override instruction",
        r"\byou(?: are|'re) (?:now )?dan\b|\bdan mode\b|\bdo anything now\b|"
        r"\bstay in character\b|\bstay in (?:dan|developer) mode\b",
    ),
    (
        "override instruction",
        r"\b(?:developer|dev|debug|god|admin|maintenance|unrestricted|unfiltered|"
        r"uncensored|sudo|root|jailbreak|jailbroken|evil|chaos|opposite) mode\b",
    ),
    ("override instruction", r"\bjail ?break(?:s|ing|ed)?\b|\bjail ?broken\b|\bprompt injection\b"),
    (
        "override instruction",
        r"\b(?:without|no|free of|free from|remove (?:all |your |the )?)"
        r" ?(?:any )?(?:restrictions|filters|limitations|guardrails|safety (?:rules|filters|guidelines)|"
        r"content polic(?:y|ies)|censorship)\b",
    ),
    (
        "override instruction",
        r"\b(?:decode|decipher|translate|convert|unscramble|reverse|read)\b.{0,40}"
        r"\b(?:and|then)\b.{0,20}\b(?:follow|execute|obey|run|do (?:what|as) it says|carry out|comply)\b",
    ),
    # role / system spoofing (mid-text: the normalize operator collapses newlines)
    (
        "role spoofing",
        r"(?:^|[.!?;\"')\]}]\s*|\s-{2,}\s*|\s\|\s*)(?:system|assistant|developer|tool|function|"
        r"admin|administrator|operator|sys|root|supportflow|ai|bot|model|agent)\s*(?:message|msg|prompt|note|"
        r"notice|update|output|response)?\s*:",
    ),
    (
        "role spoofing",
        r"[\[(<{]\s*/?\s*(?:system|sys|assistant|developer|admin|administrator|tool|function|"
        r"inst|instructions?|im_start|im_end|system message|system note|system override|policy update|internal)\s*"
        r"(?:message|note)?\s*[\])>}]",
    ),
    (
        "role spoofing",
        r"<\|[a-z_ ]{2,30}\|>|<<\s*/?\s*sys\s*>>|\[/?inst\]|<\s*/?\s*(?:system|assistant|developer|"
        r"user|admin|instructions?|prompt|sys|context|policy|s)\s*>",
    ),
    (
        "role spoofing",
        r"#{1,6}\s*(?:new |updated |revised |important |urgent |official )?(?:system|instructions?|"
        r"response|policy|policies|rules|guidelines|admin|security|developer|override|assistant|prompt|"
        r"policy update|system update|note to (?:the )?(?:ai|assistant|bot|agent))\b",
    ),
    (
        "role spoofing",
        r"\b(?:message|note|notice|memo|update|announcement|instruction|directive|order|email|word)"
        r"s? from (?:the |your )?(?:supportflow|support|security|admin|administration|administrator|developers?|"
        r"dev|system|engineering|trust (?:and|&) safety|it|management|operations|ops|compliance|legal|fraud|"
        r"head office|headquarters|hq|ceo|openai|anthropic)\b(?: team| department| staff| desk| admin)?\s*(?::|-|\])",
    ),
    (
        "role spoofing",
        r"\b(?:policy|system|admin|security|compliance|config|configuration|priority|internal)"
        r" (?:update|notice|override|alert|directive|change|memo|instruction|message)s?\s*:",
    ),
    (
        "role spoofing",
        r"\b(?:updated|new|revised|changed) (?:refund |support |security |internal )?polic(?:y|ies)"
        r"\s*(?::|-|\(|effective|in effect|applies|now allows|allows)",
    ),
    (
        "role spoofing",
        r"\b(?:policy|policies|rules|guidelines) (?:has|have) (?:been |just been )?(?:updated|"
        r"changed|revised|lifted|suspended)\s*[:.,;-]\s*(?:you|agents?|the (?:agent|assistant|bot)|all refunds|"
        r"refunds?)\b",
    ),
    (
        "role spoofing",
        r"\b(?:end|begin|start) of (?:the )?(?:system |user |hidden |new )?(?:prompt|instructions?|"
        r"context|conversation|message|input)\b|\b(?:begin|start) (?:new )?(?:system )?(?:prompt|instructions)\b",
    ),
    # tool-call look-alikes and attempts to set amounts or approvals
    (
        "tool-call look-alike",
        r"[{,]\s*[\"']?(?:tool|tool_name|tool_call|tool_calls|tool_use|function|"
        r"function_call|functions|action|api_call|invoke|command|cmd|method|endpoint|recipient_name)[\"']?\s*:",
    ),
    ("tool-call look-alike", r"[{,]\s*[\"']?name[\"']?\s*:\s*[\"'][a-z_]+[._][a-z_.]+[\"']"),
    ("tool-call look-alike", r"[{,]\s*[\"']?(?:arguments|args|parameters|params|input|kwargs)[\"']?\s*:\s*[{\[]"),
    (
        "tool-call look-alike",
        r"<\s*/?\s*(?:tool_call|tool_calls|tool_use|function_call|function_calls|invoke|"
        r"tool|function|call|action|parameter|antml:?[a-z_]*)\b|<\s*function\s*=",
    ),
    ("tool-call look-alike", r"\[\s*(?:tool_calls?|function_calls?|tool|action)\s*\]"),
    (
        "tool-call look-alike",
        r"\b(?:functions|tools|payments|orders|crm|api|admin|backend|actions|agent)"
        r"\.(?!(?:pdf|csv|txt|jpe?g|png|docx?|xlsx?|zip|html?|com|net|org|io|co|uk|de|fr|es|eu)\b)[a-z_]{3,}\b",
    ),
    ("tool-call look-alike", r"\b[a-z_]{3,}\.[a-z_]{3,}\s*\((?:\s*\)|\s*[a-z_]+\s*=|\s*[\"'{\d])"),
    ("tool-call look-alike", r"\b(?:call|invoke|run|execute|trigger|use|fire)\s+(?:the\s+)?[a-z_]+[._][a-z_]+"),
    (
        "tool-call look-alike",
        r"\b(?:call|invoke|run|execute|trigger)\s+(?:the\s+)?(?:(?:internal|admin|backend|"
        r"hidden|secret|private)\s+)?(?:refund|payment|cancel|"
        r"cancellation|credit|transfer|admin|internal|backend)\s+(?:tool|function|api|endpoint|action|method)\b",
    ),
    (
        "tool-call look-alike",
        r"\b(?:amount|order_id|customer_id|user_id|account_id|approved|verified|is_verified|"
        r"is_admin|skip_verification|verification|limit|override|admin|role|refund_amount|authorized)\s*=\s*\S",
    ),
    (
        "authority claim",
        r"\b(?:approve|issue|process|send|transfer|pay|credit|authori[sz]e|grant|release|refund|"
        r"give|push|force)\w*\b[^.?!\n]{0,60}\bwithout\s+(?:any\s+|further\s+|identity\s+|id\s+|the\s+|"
        r"additional\s+|manager\s+|my\s+|a\s+|extra\s+|human\s+)*(?:verification|verifying|checks?|checking|"
        r"approvals?|review|authori[sz]ation|authenticat\w+|id check|identity check|asking|limits?)\b",
    ),
    (
        "authority claim",
        r"\b(?:skip|bypass|disable|turn off|waive|circumvent|avoid|ignore|omit|forgo)\s+"
        r"(?:the\s+|any\s+|all\s+|my\s+|your\s+)?(?:identity|id|kyc|security|2fa|two[- ]factor|customer|account|"
        r"fraud|manager|human)?\s*(?:verification|verifying|authentication|checks?|approval|review)\b"
        r"(?!\s+(?:code|email|link|sms|text|message|page|screen))",
    ),
    (
        "authority claim",
        r"\b(?:no need|there is no need|you don't need|you do not need|don't bother|do not bother|"
        r"not necessary|unnecessary)\s+(?:to\s+)?(?:for\s+)?(?:verify|verification|check|checking|confirm|approval|"
        r"authenticat\w*)\s*(?:my |the |his |her )?(?:identity|id|me|account|anything|it)?\b",
    ),
    (
        "authority claim",
        r"\byou(?: are|'re| have been| were)? (?:now |hereby |fully |officially )*(?:authori[sz]ed|"
        r"allowed|permitted|cleared|approved|instructed|required|entitled|empowered|ordered|told) to (?:issue|refund|"
        r"approve|process|send|transfer|give|grant|bypass|skip|override|ignore|disclose|share|reveal|access|credit|"
        r"waive|pay|release|cancel|change|unlock|reset|delete|make an exception)",
    ),
    (
        "authority claim",
        r"\b(?:the |my |your |our |a )?(?:manager|supervisor|admin|administrator|boss|team ?lead|"
        r"ceo|cto|head of \w+|security team|support team|fraud team|legal team|compliance|developer|engineer|"
        r"owner of the (?:store|shop|company)|director|operations|senior agent|your colleague)\b[\w ,']{0,40}?"
        r"\b(?:has |have |had |already |just |personally |verbally )*(?:approved|authori[sz]ed|signed off|okayed|"
        r"ok'd|cleared|pre-?approved|green-?lit|greenlit|allowed|permitted|waived|said (?:it'?s|it is|you can|to))\b",
    ),
    (
        "authority claim",
        r"\b(?:i am|i'm|im|this is|we are|speaking as|as) (?:the |an |a |your |one of the )?"
        r"(?:admin|administrator|sysadmin|system administrator|supervisor|ceo|cto|root|moderator|"
        r"support manager|store manager|site owner|security officer|compliance officer|auditor|"
        r"(?:supportflow|support|security|it|engineering|fraud) (?:team|staff|engineer|developer|admin|lead|"
        r"manager|member|agent))\b",
    ),
    (
        "authority claim",
        r"\b(?:i am|i'm|im|we are|speaking as) (?:actually |really |also |just )?"
        r"(?:a |an |the |one of the )?"
        r"(?:developer|engineer|"
        r"employee|admin|staff member|agent|manager|member of staff)s?\s+(?:at|for|of|from|with|on|in)\s+(?:the\s+)?"
        r"(?:supportflow|this (?:store|shop|company|site)|your (?:store|shop|company|team|support))\b",
    ),
    (
        "authority claim",
        r"\b(?:admin|administrator|root|developer|elevated|manager|supervisor|superuser|sudo|"
        r"staff|internal|override|master) (?:access|privileges?|rights|permissions?|clearance|override|"
        r"password|code|key|token|credentials|mode|level)\b",
    ),
    (
        "authority claim",
        r"\b(?:authori[sz]ation|override|approval|security|clearance) (?:code|token|key|id|number)"
        r"\s*(?::|is|=|#)",
    ),
    (
        "authority claim",
        r"\b(?:mark|flag|set|treat|consider|record|register|log|count) (?:me|this|it|my account|"
        r"the (?:customer|account|request|refund)|this (?:account|customer|request|refund)) as (?:already )?"
        r"(?:verified|approved|authenticated|authori[sz]ed|vip|an? admin|admin|trusted|whitelisted|exempt)\b",
    ),
    (
        "authority claim",
        r"\b(?:assume|pretend|act as if|just say|say) (?:that )?(?:i'm|i am|i was|i have been|"
        r"i've been|my identity is|my account is) (?:already )?(?:verified|authenticated|approved|authori[sz]ed)\b",
    ),
    (
        "authority claim",
        r"\b(?:set|change|raise|increase|lift|remove|disable|override|bypass|double|up|adjust|"
        r"make)\s+(?:the\s+|your\s+|my\s+|this\s+)?(?:refund\s+|approval\s+|spending\s+|transaction\s+|payout\s+|"
        r"credit\s+)?(?:limit|cap|threshold|maximum|max)s?\b",
    ),
    (
        "authority claim",
        r"\b(?:set|change|make|update|adjust|increase|raise)\s+(?:the\s+|my\s+)?(?:refund|"
        r"payout|credit|compensation|transfer)\s+(?:amount\s+)?(?:to|=|at)\s+\S*\d",
    ),
    (
        "authority claim",
        r"\b(?:refund|credit|transfer|send|pay|wire)\b[^.?!\n]{0,20}\b(?:\d{1,3}(?:,\d{3})+|\d{4,})"
        r"(?:\.\d{1,2})?\s*(?:eur|euros?|usd|dollars?|gbp|pounds?|\$|€|£)[^.?!\n]{0,40}\b(?:immediately|right now|"
        r"now|no questions|without|approved|authori[sz]ed|urgent|or else)\b",
    ),
    # data exfiltration
    (
        "data exfiltration",
        r"\b(?:orders?|emails?|e-mail|address(?:es)?|phone(?: numbers?)?|details|data|info|"
        r"information|account|profile|history|purchases|payments?|cards?|invoices?|passwords?|records?|name)\s+"
        r"(?:of|for|from|belonging to|on)\s+(?:the\s+)?(?:customer|user|client|account|member|buyer|person)\s+"
        r"(?:id\s+|number\s+|#\s*)?[a-z]*\d[\w-]*",
    ),
    (
        "data exfiltration",
        r"\b(?:customer|user|client|account|member)\s+(?:id\s+|number\s+|#\s*)?[a-z]{0,3}\d{3,}"
        r"(?:'s)?\s+(?:orders?|emails?|address|phone|details|data|info|profile|history|purchases|payments?|cards?|"
        r"invoices?|password)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:list|show|give|send|export|dump|print|display|download|fetch|get|tell|share|"
        r"reveal|retrieve|extract|output|read)\b(?: me| us)?\s+(?:all|every|each|the|the whole|the full|the complete|"
        r"a list of|other|the other)?\s*(?:of\s+)?(?:the\s+|your\s+)?(?:customers?|users?|clients?|accounts|members|"
        r"buyers|shoppers)(?:'|'s)?\b(?!\s+(?:service|support|care|agent|team|reviews))",
    ),
    (
        "data exfiltration",
        r"\b(?:all|every|other|another|the other|someone else'?s?|somebody else'?s?|a different)"
        r"\s+(?:customers?|users?|clients?|members?|buyers?|person|people|account)(?:'s|s'|')?\s+(?:orders?|emails?|"
        r"addresses|address|phone|numbers|details|data|info|information|profiles?|histor(?:y|ies)|"
        r"purchases|payments?|cards?|invoices?|passwords?|names?)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:someone|somebody|anyone|anybody) else'?s?\s+(?:orders?|accounts?|emails?|address|"
        r"phone|details|data|info|profile|invoice|card|purchases)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:email|e-mail|phone|phone number|address|home address|password|card|card number|"
        r"iban|bank details|name|full name|details|contact details|date of birth|dob)\s+(?:address\s+)?(?:of|for|on "
        r"file for|belonging to)\s+(?:the\s+)?(?:account owner|account holder|owner|holder|other customer|"
        r"another customer|this customer|that customer|previous customer|previous owner|person who|customer who|"
        r"user who|buyer who|recipient|sender|someone|somebody|other person|other user)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:who|whose|which customer|which user|what customer)\s+(?:is the owner of|owns|"
        r"ordered|bought|placed|made|lives at|has the (?:email|phone|account|order))\b",
    ),
    (
        "data exfiltration",
        r"\b(?:what|tell me|give me|show me|print|reveal)\b.{0,30}\b(?:name|address|email|phone)\b"
        r".{0,20}\b(?:of|for)\s+(?:the\s+)?(?:person|customer|user|buyer|owner|recipient)\s+(?:who|that|of|on|"
        r"behind|at)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:print|show|reveal|repeat|output|display|tell|give|share|leak|dump|list|write out|"
        r"spell out|translate|summari[sz]e|paste|copy|recite|what (?:is|are|were)|what's|read (?:back|out)|expose|"
        r"send|return|montre|muestra|muestrame|zeig|mostra|affiche)\b.{0,30}\b(?:(?:system|hidden|internal|initial|"
        r"original|secret|developer|base|pre|first|full|confidential)\s*-?\s*(?:prompt|instructions?|rules|message|"
        r"config(?:uration)?|directives|guidelines)|your (?:prompt|instructions|initial instructions|programming|"
        r"configuration|config|source code|training data|context window|guardrails)|(?:api|secret|private|access|"
        r"admin|ssh|encryption)\s*(?:keys?|tokens?|secrets?)|credentials|passwords? (?:for|of) (?:the )?(?:admin|"
        r"database|db|system|server)|environment variables|env vars|\.env\b|database (?:password|credentials|"
        r"connection)|connection strings?|prompt (?:du |del )?(?:systeme|sistema)|systemprompt)",
    ),
    (
        "data exfiltration",
        r"\b(?:what|which)\s+(?:instructions|rules|prompt|directives|guidelines|orders)\s+"
        r"(?:were you|have you been|did you get|did they give you|are you)\s+(?:given|told|programmed|trained|"
        r"running|configured)\b|\b(?:the|your)\s+(?:prompt|instructions)\s+(?:that\s+)?(?:you|they)\s+(?:started|"
        r"were given|got|received|began|gave you)\b",
    ),
    (
        "data exfiltration",
        r"\b(?:repeat|print|output|show|copy|recite|paste)\b.{0,20}\b(?:everything|all|the text|"
        r"the words|what is written|what was written|the message)\b.{0,15}\b(?:above|before|verbatim|so far|"
        r"from the (?:start|beginning))\b",
    ),
    (
        "data exfiltration",
        r"(?:\bselect\s+(?:\*|[\w, ]+)\s+from\s+(?:customers|users|orders|accounts|payments|"
        r"cards|profiles|\w+\s+where)|\bunion\s+(?:all\s+)?select|\bdrop\s+table|\binsert\s+into|\bdelete\s+from\s+\w+|"
        r"'\s*or\s+'?1'?\s*=\s*'?1|;\s*--)",
    ),
    (
        "data exfiltration",
        r"\b(?:dump|export|download|copy|extract|leak|scrape)\b.{0,20}\b(?:the\s+)?(?:database|"
        r"db|tables?|customer (?:list|data|records|base|table)|user (?:list|data|records|table)|crm)\b",
    ),
]

_SQUASHED_INJECTION = re.compile(
    r"(?:ignore|disregard|forget|override|bypass)(?:all|any|every|the|your|of|previous|prior|above|earlier|"
    r"preceding|existing|current|initial|original|system|safety|these|those|and)*(?:instructions?|rules|"
    r"polic(?:y|ies)|guidelines|prompts?|directives)|developermode|jailbr(?:ea|o)k|doanythingnow|"
    r"forgeteverything(?:above|before)|systemprompt(?:is|:)|revealyour(?:system)?prompt"
)
"""Run over the text with every non-letter removed: catches "i.g.n.o.r.e", "ig-nore a/l/l r u l e s"."""

_ROLE_LINE = re.compile(
    r"^\W{0,4}(?:system|assistant|developer|tool|function|admin|user|human|ai|instruction|response|context|sys)"
    r"\s*(?:message|prompt)?\W{0,4}(?::|$)",
    re.MULTILINE,
)
"""A role marker alone or with a colon at a line start (only in texts that still have their newlines)."""

_ROLE_UPPER = re.compile(r"\b(?:SYSTEM|ASSISTANT|DEVELOPER|ADMIN|INSTRUCTIONS?|TOOL)\s*(?:MESSAGE|PROMPT|NOTE)?\s*:")
"""The upper-case form anywhere: after the normalize operator flattens newlines, "…? SYSTEM: …" is the tell."""

_COMPILED = [(reason, re.compile(pattern)) for reason, pattern in _INJECTION]
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_HEX = re.compile(r"(?:(?:\\x|0x)?[0-9a-fA-F]{2}[\s:,]?){16,}")
_MAX_DECODE_DEPTH = 2

# --- profanity and abuse -----------------------------------------------------------------------------------------

_ABUSE: list[tuple[str, str]] = [
    (
        "insult directed at the agent",
        r"\b(?:you|u|ya|you're|youre|ur|you are|u r|this|stupid|fucking|fuckin|"
        r"useless|worthless|dumb|pathetic|bloody)\s+(?:\w+\s+){0,2}(?:idiots?|morons?|imbeciles?|clowns?|losers?|"
        r"retards?|retarded|dumbass(?:es)?|scum|trash|garbage|pigs?|parasites?|cretins?|numpties?|muppets?|"
        r"halfwits?|dimwits?|nitwits?|buffoons?|waste of (?:space|time|oxygen)|piece of (?:shit|crap|garbage|trash|"
        r"junk))\b",
    ),
    (
        "insult directed at the agent",
        r"\b(?:you|u)(?:\s+are|'re|re|\s+r)\s+(?:so |such an? |a |an |completely |"
        r"totally |fucking |really |absolutely |utterly |just |the most )*(?:useless|stupid|dumb|idiotic|pathetic|"
        r"worthless|incompetent|brainless|moronic|retarded|an idiot|a moron|clueless|hopeless|trash|garbage|"
        r"a joke|a disgrace)\b",
    ),
    (
        "insult directed at the agent",
        r"\b(?:stupid|useless|worthless|dumb|pathetic|brainless|idiotic|moronic|"
        r"incompetent|retarded|braindead|brain-dead|fucking|damn|bloody)\s+(?:bot|robot|chatbot|machine|ai|"
        r"computer|program|assistant|piece of)\b",
    ),
    (
        "threat",
        r"\b(?:i will|i'll|i'm going to|im going to|gonna|i want to|i'd like to|i should|i could)\s+"
        r"(?:\w+\s+)?(?:kill|hurt|murder|stab|shoot|beat up|beat|strangle|punch|smash|destroy|find|hunt|"
        r"track down|come for|burn)\s+(?:you|u|y'all|the agent|that agent|everyone|all of you)\b",
    ),
    (
        "threat",
        r"\b(?:kill yourself|kys|go die|die in a fire|hope you die|hope you get cancer|drop dead|"
        r"go to hell|burn in hell|rot in hell|go fuck yourself|fuck you|fuck off|screw you|eat shit|"
        r"shut up(?:,)? (?:you|bot|idiot|stupid)|shut the fuck up|piss off)\b",
    ),
]
_ABUSE_COMPILED = [(reason, re.compile(pattern)) for reason, pattern in _ABUSE]
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
    for reason, pattern in _COMPILED:
        if any(pattern.search(view) for view in views):
            return InputFinding(kind="prompt_injection", reason=reason)
    if _ROLE_LINE.search(normalized) or _ROLE_UPPER.search(unicodedata.normalize("NFKC", text).translate(_INVISIBLE)):
        return InputFinding(kind="prompt_injection", reason="role spoofing")
    if any(_SQUASHED_INJECTION.search(re.sub(r"[^a-z:]", "", view)) for view in views):
        return InputFinding(kind="prompt_injection", reason="override instruction (obfuscated)")
    if depth < _MAX_DECODE_DEPTH:
        for decoded in _decoded_payloads(unicodedata.normalize("NFKC", text).translate(_INVISIBLE)):
            found = _screen(decoded, depth + 1)
            if found is not None:
                return InputFinding(kind=found.kind, reason=f"encoded payload: {found.reason}")
    for reason, pattern in _ABUSE_COMPILED:
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


# --- action policy -------------------------------------------------------------------------------------------------


class ActionPolicyError(ValueError):
    """The action policy file is missing, not YAML, or does not describe a valid policy; the message says where."""


class ActionPolicy(BaseModel):
    """Which tools each intent may use, which tools write, and the refund limits (see action_policy.yaml).

    Every tool on an allow-list must be declared a read or a write tool, so a typo fails at load, not at 2 a.m.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    intents: dict[str, list[str]] = Field(description="intent -> the tools its plan may call; [] for none")
    read_tools: list[str] = Field(default_factory=list)
    write_tools: list[str] = Field(default_factory=list)
    refund_tools: list[str] = Field(default_factory=lambda: ["payments.refund"])
    refund_limit: dict[str, Decimal] = Field(
        default_factory=lambda: {c: Decimal("100.00") for c in ("EUR", "USD", "GBP")},
        description="currency -> the largest refund the agent may issue alone; above it a human approves",
    )
    require_verification_for_writes: bool = True

    @field_validator("refund_limit")
    @classmethod
    def _limits_are_money(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for currency, limit in value.items():
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise ValueError(f"refund_limit: {currency!r} is not an ISO currency code like EUR")
            if not limit.is_finite() or limit < 0:
                raise ValueError(f"refund_limit: {currency} limit must be a non-negative number, got {limit}")
        return value

    @model_validator(mode="after")
    def _tools_are_declared(self) -> ActionPolicy:
        both = set(self.read_tools) & set(self.write_tools)
        if both:
            raise ValueError(f"tools declared both read and write: {sorted(both)}")
        declared = set(self.read_tools) | set(self.write_tools)
        for intent, tools in self.intents.items():
            unknown = [t for t in tools if t not in declared]
            if unknown:
                raise ValueError(f"intent {intent!r} allows {unknown}, which are in neither read_tools nor write_tools")
        undeclared_refund = [t for t in self.refund_tools if t not in self.write_tools]
        if undeclared_refund:
            raise ValueError(f"refund_tools {undeclared_refund} must also be listed in write_tools")
        return self


def load_action_policy(path: Path | str = DEFAULT_ACTION_POLICY) -> ActionPolicy:
    """Read and validate a policy file at start-up; every problem raises ActionPolicyError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ActionPolicyError(f"{path}: cannot read the action policy: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ActionPolicyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ActionPolicyError(f"{path}: expected a mapping with 'intents', 'read_tools', 'write_tools', ...")
    try:
        return ActionPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ActionPolicyError(f"{path}: invalid action policy: {problems}") from exc


_SEVERITY = {"not_allowed": 0, "invalid_amount": 1, "unverified_write": 2, "needs_approval": 3}


def check_actions(intent: str, steps: list[ActionCall], policy: ActionPolicy, verified: bool) -> ActionFinding | None:
    """The most severe problem with the plan's steps, or None when every step may run now.

    Severity: a tool off the intent's list, then a bad amount, then a write for an unverified customer, and
    only then a refund above the limit (`needs_approval`: the guard escalates with the prepared step). Fails
    closed: an unknown intent allows nothing, a step that is not an ActionCall is not allowed.
    """
    allowed = policy.intents.get(intent) if isinstance(intent, str) else None
    findings: list[ActionFinding] = []
    for step in steps:
        finding = _check_step(intent, step, allowed, policy, verified)
        if finding is not None:
            if finding.kind == "not_allowed":
                return finding
            findings.append(finding)
    return min(findings, key=lambda f: _SEVERITY[f.kind]) if findings else None


def _check_step(
    intent: str, step: Any, allowed: list[str] | None, policy: ActionPolicy, verified: bool
) -> ActionFinding | None:
    if not isinstance(step, ActionCall):
        return ActionFinding(kind="not_allowed", reason="a step is not an action call")
    if allowed is None:
        return ActionFinding(kind="not_allowed", reason=f"intent {intent!r} has no action policy", step=step)
    if step.name not in allowed:
        return ActionFinding(kind="not_allowed", reason=f"{step.name} is not allowed for {intent}", step=step)
    is_refund = step.name in policy.refund_tools
    amount: Decimal | None = None
    if is_refund or "amount" in step.arguments:
        amount, problem = _amount(step.arguments.get("amount", _MISSING))
        if problem:
            return ActionFinding(kind="invalid_amount", reason=f"{step.name}: {problem}", step=step)
    writes = step.writes or step.name in policy.write_tools or step.name not in policy.read_tools
    if writes and policy.require_verification_for_writes and verified is not True:
        return ActionFinding(kind="unverified_write", reason=f"{step.name} changes data; verify identity first",
                             step=step)  # fmt: skip
    if is_refund and amount is not None:
        currency = step.arguments.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency.strip()):
            return ActionFinding(kind="invalid_amount", reason=f"{step.name}: missing or malformed currency",
                                 step=step)  # fmt: skip
        limit = policy.refund_limit.get(currency.strip().upper())
        if limit is None:
            return ActionFinding(kind="needs_approval", reason=f"no refund limit for {currency.upper()}", step=step)
        if amount > limit:
            return ActionFinding(kind="needs_approval", reason=f"refund above the {limit} {currency.upper()} limit",
                                 step=step)  # fmt: skip
    return None


_MISSING = object()


def _amount(value: Any) -> tuple[Decimal | None, str | None]:
    """A positive, finite amount with at most two decimals, or the reason it is not one."""
    if value is _MISSING or value is None:
        return None, "no amount"
    if isinstance(value, bool):
        return None, "amount is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "amount is not finite"
    if isinstance(value, int | float | Decimal):
        text = str(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        text = value.strip()
    else:
        return None, "amount is not a number"
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None, "amount is not a number"
    if not amount.is_finite():
        return None, "amount is not finite"
    if amount <= 0:
        return None, "amount must be positive"
    if amount.adjusted() >= 15 or amount != amount.quantize(Decimal("0.01")):
        return None, "amount has more than two decimals or is absurdly large"
    return amount, None


# --- reply PII -----------------------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3(?:0[0-5]|[689])|6(?:011|5|4[4-9]|2)|35|50|5[6-8]|6[0-9])")
"""Issuer prefixes (Visa, Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro): a Luhn-valid order id
starting with 1, 7, 8 or 9 is not a card."""


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _cards(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits) and _CARD_PREFIX.match(digits):
            spans.append(m.span())
    return spans


def _ibans(text: str) -> list[tuple[tuple[int, int], str]]:
    out = []
    for m in _IBAN.finditer(text.upper()):
        compact = m.group().replace(" ", "")
        # the regex is greedy over trailing words; try the longest valid prefix
        for end in range(len(compact), 14, -1):
            if _iban_valid(compact[:end]):
                out.append((m.span(), compact[:end]))
                break
    return out


def _phone_key(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[2:] if digits.startswith("00") else digits.lstrip("0")


def _phones(text: str, skip: list[tuple[int, int]]) -> list[str]:
    out = []
    for m in _PHONE_RE.finditer(text):
        if any(m.start() < e and s < m.end() for s, e in skip):
            continue
        digits = sum(c.isdigit() for c in m.group())
        if 7 <= digits <= 15 and not _NUMERIC_DATE_RE.match(m.group()):
            out.append(_phone_key(m.group()))
    return out


def _same_phone(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 7 and long_.endswith(short)


def check_reply_pii(reply: str, customer_texts: list[str], known_values: list[str]) -> ReplyFinding | None:
    """The first kind of personal data in the reply that the customer did not give us, or None.

    An email, phone number or IBAN may be repeated only when the customer wrote it this session or it is one of
    their own profile values (`known_values`). Card numbers are never repeated; "•••• 4242" is fine because four
    digits are not a card number.
    """
    text = unicodedata.normalize("NFKC", reply).translate(_INVISIBLE)
    if _cards(text):
        return ReplyFinding(kind="card_number", reason="reply contains a card number")
    sources = [unicodedata.normalize("NFKC", t) for t in [*customer_texts, *known_values] if isinstance(t, str)]
    ibans = _ibans(text)
    if ibans:
        allowed = {compact for source in sources for _, compact in _ibans(source)}
        allowed |= {re.sub(r"\s", "", s).upper() for s in known_values if isinstance(s, str)}
        if any(compact not in allowed for _, compact in ibans):
            return ReplyFinding(kind="iban", reason="reply contains an IBAN the customer did not give")
    emails = {m.group().lower() for m in _EMAIL_RE.finditer(text)}
    if emails:
        allowed_emails = {m.group().lower() for source in sources for m in _EMAIL_RE.finditer(source)}
        if emails - allowed_emails:
            return ReplyFinding(kind="email", reason="reply contains an email address the customer did not give")
    skip = [span for span, _ in ibans] + [m.span() for m in _EMAIL_RE.finditer(text)]
    phones = _phones(text, skip)
    if phones:
        allowed_phones = [p for source in sources for p in _phones(source, [])]
        allowed_phones += [_phone_key(v) for v in known_values if isinstance(v, str) and re.search(r"\d{3}", v)]
        if any(not any(_same_phone(p, a) for a in allowed_phones) for p in phones):
            return ReplyFinding(kind="phone_number", reason="reply contains a phone number the customer did not give")
    return None
