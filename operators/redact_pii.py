"""redact_pii: turn a raw turn event into the analytics event, with PII replaced by placeholders.

It runs in its own stage (`analytics`, source `sf.events.raw`), off the customer's reply path,
so the NER it needs never delays a reply and the stage scales on its own. The stage processes
many conversations at once; their texts meet in a `MicroBatcher` and go through spaCy together,
which costs a fraction of one text at a time.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from typing import Any, ClassVar

from pydantic import Field

from connectors.batching import MicroBatcher, batcher_on_this_loop
from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext, PiiRedactor
from schemas import ConversationEvent, RawConversationEvent

_PII_ENTITY_WORDS: dict[str, str] = {
    "email": "EMAIL_ADDRESS",
    "mail": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "mobile": "PHONE_NUMBER",
    "tel": "PHONE_NUMBER",
    "name": "PERSON",
    "person": "PERSON",
    "card": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "ip": "IP_ADDRESS",
    "address": "ADDRESS",
}
"""A word in an NLU entity's type that makes its whole value PII (`phone_number`, `person_name`)."""


_PLACEHOLDER = re.compile(r"<([A-Z_]+)>")
_MIN_PROPAGATED = 3
"""Shorter found values ("Al") are not replaced across fields: they would hit ordinary words."""


def found_values(original: str, redacted: str) -> dict[str, str]:
    """The values the redactor replaced in `original`, by placeholder, read back from `redacted`.

    The redactor only swaps spans for `<TYPE>`, so the redacted text with each placeholder made a
    wildcard matches the original; the wildcards capture what was removed.
    """
    parts = _PLACEHOLDER.split(redacted)  # literal, TYPE, literal, TYPE, ..., literal
    if len(parts) == 1:
        return {}
    pattern = "".join(re.escape(part) if i % 2 == 0 else "(.+?)" for i, part in enumerate(parts))
    match = re.fullmatch(pattern, original, re.DOTALL)
    if match is None:
        return {}
    return {
        value: f"<{kind}>"
        for value, kind in zip(match.groups(), parts[1::2], strict=True)
        if len(value.strip()) >= _MIN_PROPAGATED
    }


def placeholder_for_entity_type(entity_type: str) -> str | None:
    """`<PHONE_NUMBER>` for an NLU entity of type `phone_number`; None for a type that is not PII."""
    for word in re.split(r"[^a-z0-9]+", entity_type.lower()):
        if word in _PII_ENTITY_WORDS:
            return f"<{_PII_ENTITY_WORDS[word]}>"
    return None


class RedactPiiConfig(OperatorConfig):
    max_batch: int = Field(default=64, ge=1, description="texts per spaCy batch at most")
    max_wait_ms: float = Field(default=5.0, ge=0, description="longest a text waits for others to share its batch")
    entities: list[str] | None = Field(
        default=None, min_length=1, description="presidio entity types; unset: the redactor's own set"
    )
    score_threshold: float | None = Field(default=None, ge=0, le=1, description="unset: the redactor's own")
    system_text_cache: int = Field(
        default=20_000,
        ge=0,
        description="redacted replies and tool results remembered by text (0: none); the customer's words never are",
    )


class RedactPii(Operator[RawConversationEvent, ConversationEvent]):
    """Redact the customer's text, the reply, PII-typed entity values and action results.

    Entities whose type names PII (email, phone, name, card...) are replaced whole, without
    analysis: the NLU already said what they are. Every other text goes through the redactor, and
    a value found in one field is replaced in all of them.
    """

    name = "redact_pii"
    input_type = RawConversationEvent
    output_type = ConversationEvent
    Config: ClassVar[type[OperatorConfig]] = RedactPiiConfig

    def __init__(self, config: OperatorConfig | None = None, redactor: PiiRedactor | None = None) -> None:
        super().__init__(config)
        self.redactor: PiiRedactor | None = redactor
        self._batcher: MicroBatcher[str, str] | None = None
        # Replies and tool results are written by templates and the backend, so the same texts come
        # back all day; analysing each again cost the analytics stage most of its CPU (bench profile).
        # The redactor gives the same output for the same text, so remembering it changes nothing.
        self._system_texts: OrderedDict[str, str] = OrderedDict()

    def warm_up(self, ctx: OperatorContext) -> None:
        if self.redactor is None:
            cfg: RedactPiiConfig = self.config  # type: ignore[assignment]
            self.redactor = ctx.require_clients(self.name).pii_redactor(cfg.entities, cfg.score_threshold)
        self.redactor.warm_up()

    async def run(self, record: RawConversationEvent, ctx: OperatorContext) -> ConversationEvent:
        data = record.model_dump(mode="json")
        texts: list[str] = []  # the customer's words
        system: list[str] = []  # what supportflow and the backend wrote
        if data.get("message"):
            texts.append(data["message"]["content"])
        if data.get("response"):
            system.append(data["response"]["content"])
        entities = (data.get("nlu") or {}).get("entities", [])
        for entity in entities:
            if placeholder_for_entity_type(entity["type"]) is None:
                texts.append(entity["value"])
        if data.get("action"):
            system.extend(_strings_in(data["action"]["result"]))

        redacted = await self._redact(
            list(dict.fromkeys(t for t in texts if t.strip())), list(dict.fromkeys(t for t in system if t.strip()))
        )

        # What was found in one field is PII in every field: spaCy may see "Jane Doe" in the
        # customer's sentence and miss it in the reply, and the NLU's regexes know some values too.
        known: dict[str, str] = {}
        for original, result in redacted.items():
            known.update(found_values(original, result))
        for entity in entities:
            placeholder = placeholder_for_entity_type(entity["type"])
            if placeholder and len(entity["value"].strip()) >= _MIN_PROPAGATED:
                known[entity["value"]] = placeholder
        by_length = sorted(known.items(), key=lambda kv: len(kv[0]), reverse=True)

        def clean(text: str) -> str:
            out = redacted.get(text, text)
            for value, placeholder in by_length:
                out = out.replace(value, placeholder)
            return out

        if data.get("message"):
            data["message"]["content"] = clean(data["message"]["content"])
        if data.get("response"):
            data["response"]["content"] = clean(data["response"]["content"])
        for entity in entities:
            entity["value"] = placeholder_for_entity_type(entity["type"]) or clean(entity["value"])
        if data.get("action"):
            data["action"]["result"] = _map_strings(data["action"]["result"], clean)
        return ConversationEvent.model_validate(data)

    async def _redact(self, customer: list[str], system: list[str]) -> dict[str, str]:
        """Each text redacted: the customer's every time, the system's from memory when seen before."""
        cfg: RedactPiiConfig = self.config  # type: ignore[assignment]
        remembered = {t: self._system_texts[t] for t in system if t in self._system_texts}
        for text in remembered:
            self._system_texts.move_to_end(text)
        todo = list(dict.fromkeys([*customer, *(t for t in system if t not in remembered)]))
        batcher = self._batcher_for_this_loop()
        redacted = dict(zip(todo, await asyncio.gather(*(batcher.submit(t) for t in todo)), strict=True))
        if cfg.system_text_cache:
            for text in system:
                if text not in remembered:
                    self._system_texts[text] = redacted[text]
            while len(self._system_texts) > cfg.system_text_cache:
                self._system_texts.popitem(last=False)
        return {**redacted, **remembered}

    async def close(self) -> None:
        """Finish pending batches and stop the worker thread (the runtime keeps it for the process)."""
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None

    def _batcher_for_this_loop(self) -> MicroBatcher[str, str]:
        """The batcher lives on the event loop that runs the stage; a new loop (tests) gets a new one."""
        cfg: RedactPiiConfig = self.config  # type: ignore[assignment]
        if self.redactor is None:
            raise RuntimeError("redact_pii ran before warm_up gave it a redactor")
        redactor = self.redactor
        self._batcher = batcher_on_this_loop(
            self._batcher,
            lambda: MicroBatcher(
                redactor.redact_many, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, name="redact_pii"
            ),
        )
        return self._batcher


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return []


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value
