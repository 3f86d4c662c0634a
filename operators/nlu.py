"""nlu: intent, entities and sentiment for the message.

First version, deliberately simple: a hand-written keyword classifier over the 27 Bitext
intents, regex entities and a small sentiment lexicon (`operators/_keywords.py`). The NLU issue
replaces it with a trained model served by Triton; the output record stays the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from operators._keywords import KeywordIntentClassifier, extract_entities, simple_sentiment
from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import ContextTurn, NluResult, NluTurn

SENTIMENT_TREND_KEPT = 10


class NluConfig(OperatorConfig):
    keywords_file: Path | None = None


class Nlu(Operator[ContextTurn, NluTurn]):
    """Classify the intent with keywords, extract regex entities, score sentiment with a lexicon."""

    name = "nlu"
    input_type = ContextTurn
    output_type = NluTurn
    Config: ClassVar[type[OperatorConfig]] = NluConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._classifier: KeywordIntentClassifier | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        config: NluConfig = self.config  # type: ignore[assignment]
        self._classifier = KeywordIntentClassifier.load(config.keywords_file)

    async def run(self, record: ContextTurn, ctx: OperatorContext) -> NluTurn:
        if self._classifier is None:
            self.warm_up(ctx)
        assert self._classifier is not None
        text = record.message.text
        intent, confidence, alternatives = self._classifier.classify(text)
        sentiment = simple_sentiment(text)
        session = record.session.model_copy()
        session.sentiment_trend = [*session.sentiment_trend, sentiment.score][-SENTIMENT_TREND_KEPT:]
        nlu = NluResult(
            intent=intent,
            confidence=confidence,
            entities=extract_entities(text),
            sentiment=sentiment,
            model_used="keywords-v1",
            alternatives=alternatives,
        )
        return NluTurn(**{**dict(record), "session": session}, nlu=nlu)
