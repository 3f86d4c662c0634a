"""PII redaction with presidio and spaCy, fully offline, batched through `nlp.pipe`.

Regex recognizers (email, phone, card, IBAN, IP, SSN) are cheap; the cost is spaCy's NER for
PERSON, which is why texts are analysed in batches and spaCy is loaded with only `tok2vec` and
`ner` (the parser, tagger and lemmatizer would triple the cost and add nothing presidio needs).
presidio is imported in `warm_up`, so loading the topology (which imports every operator) stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "PERSON",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
)

DEFAULT_SCORE_THRESHOLD = 0.35
"""presidio's phone recognizer scores every match 0.4 (0.75 with a cue word such as "call"), so
the threshold must sit below 0.4 or phone numbers without a cue word survive. Card numbers and
IBANs pass their checksum (score 1.0) or are not reported at all; the weakest US_SSN patterns
(bare 9-digit runs, 0.05) stay below it, so order numbers are not mistaken for SSNs."""


class PresidioRedactor:
    """Replace PII with `<ENTITY_TYPE>` placeholders; what `operators.protocols.PiiRedactor` asks for.

    `__init__` only records settings; `warm_up()` loads spaCy and builds the engines (about a
    second), and `redact_many` calls it on first use if nobody did. Not thread-safe: one thread
    (the micro-batcher's worker) should call it at a time.
    """

    def __init__(
        self,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        spacy_batch_size: int = 64,
    ) -> None:
        unknown = sorted(set(entities) - set(DEFAULT_ENTITIES))
        if unknown:
            raise ValueError(f"unsupported entities {unknown}; supported: {list(DEFAULT_ENTITIES)}")
        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.spacy_batch_size = spacy_batch_size
        self._analyzer: Any = None
        self._anonymizer: Any = None

    def warm_up(self) -> None:
        if self._analyzer is not None:
            return
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UsSsnRecognizer,
        )
        from presidio_anonymizer import AnonymizerEngine

        from connectors.pii._presidio import LeanSpacyEngine, OfflineEmailRecognizer

        engine = LeanSpacyEngine()
        engine.load()
        registry = RecognizerRegistry(
            recognizers=[
                OfflineEmailRecognizer(),
                PhoneRecognizer(),
                CreditCardRecognizer(),
                IbanRecognizer(),
                IpRecognizer(),
                UsSsnRecognizer(),
                SpacyRecognizer(supported_entities=["PERSON"]),
            ]
        )
        analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        self._anonymizer = AnonymizerEngine()
        self._analyzer = BatchAnalyzerEngine(analyzer)

    def redact(self, text: str) -> str:
        return self.redact_many([text])[0]

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        """Redact each text; one spaCy pass over the whole batch. Blank texts are returned as is."""
        self.warm_up()
        out = list(texts)
        todo = [i for i, text in enumerate(out) if text.strip()]
        if not todo:
            return out
        findings = self._analyzer.analyze_iterator(
            [out[i] for i in todo],
            language="en",
            batch_size=self.spacy_batch_size,
            entities=self.entities,
            score_threshold=self.score_threshold,
        )
        for i, found in zip(todo, findings, strict=True):
            if found:
                out[i] = self._anonymizer.anonymize(text=out[i], analyzer_results=found).text
        return out
