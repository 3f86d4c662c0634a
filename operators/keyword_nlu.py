"""nlu: intent, entities and sentiment for the message.

The intent still comes from the hand-written keyword classifier over the 27 Bitext intents
(`operators/nlu/keywords.py`; the NLU issue replaces it with a Triton-served model). Entities come from
`operators/nlu/entities.py` (rules + dateparser + spaCy NER) and sentiment from VADER (`operators/nlu/sentiment.py`);
`warm_up` loads those models. The output record is unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from connectors.batching import MicroBatcher, batcher_on_this_loop
from operators.base import Operator, OperatorConfig
from operators.nlu.entities import EntityExtractor
from operators.nlu.keywords import KeywordIntentClassifier
from operators.nlu.sentiment import SentimentScorer
from operators.protocols import OperatorContext
from schemas import ContextTurn, Entity, NluResult, NluTurn, Sentiment

SENTIMENT_TREND_KEPT = 10
CONTROL_NLU = NluResult(
    intent="control", confidence=1.0, sentiment=Sentiment(label="neutral", score=0.0), model_used="control"
)


class NluConfig(OperatorConfig):
    keywords_file: Path | None = None
    max_batch: int = Field(default=64, ge=1, description="messages per spaCy batch at most")
    max_wait_ms: float = Field(default=2.0, ge=0, description="longest a message waits for others to share a batch")
    names_and_places: bool = Field(
        default=True,
        description="spaCy NER for person and place entities (1.3 ms of CPU a message); the shaped entities "
        "(order numbers, emails, amounts, dates...) come from rules either way",
    )


class Nlu(Operator[ContextTurn, NluTurn]):
    """Classify the intent with keywords, extract entities, score sentiment and append it to the session trend."""

    name = "nlu"
    input_type = ContextTurn
    output_type = NluTurn
    Config: ClassVar[type[OperatorConfig]] = NluConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._classifier: KeywordIntentClassifier | None = None
        self._entities = EntityExtractor(use_spacy=self.config.names_and_places)  # type: ignore[attr-defined]
        self._sentiment = SentimentScorer()
        self._batcher: MicroBatcher[tuple[str, datetime | None], list[Entity]] | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        config: NluConfig = self.config  # type: ignore[assignment]
        self._classifier = KeywordIntentClassifier.load(config.keywords_file)
        self._entities.warm_up()
        self._sentiment.warm_up()

    async def classify(self, text: str) -> IntentGuess:
        """The intent step; `nlu_model` overrides it with the trained model and keeps the rest."""
        assert self._classifier is not None
        intent, confidence, alternatives = self._classifier.classify(text)
        return IntentGuess(intent, confidence, "keywords-v1", alternatives)

    async def run(self, record: ContextTurn, ctx: OperatorContext) -> NluTurn:
        if record.message.control is not None:
            return NluTurn(**dict(record), nlu=CONTROL_NLU)  # nothing to understand; the trend stays as it is
        if not self.warmed_up:
            self.warm_up(ctx)
        text = record.message.text
        # Concurrent conversations' messages meet in one spaCy batch, in a worker thread: 1.5 ms a
        # message instead of 3.8 ms one at a time on the event loop.
        config: NluConfig = self.config  # type: ignore[assignment]
        self._batcher = batcher_on_this_loop(
            self._batcher,
            lambda: MicroBatcher(
                self._entities.extract_each, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms, name="nlu"
            ),
        )
        guess, entities = await asyncio.gather(
            self.classify(text), self._batcher.submit((text, _utc_naive(record.message.received_at)))
        )
        sentiment = self._sentiment.score(text)
        session = record.session.model_copy()
        session.sentiment_trend = [*session.sentiment_trend, sentiment.score][-SENTIMENT_TREND_KEPT:]
        nlu = NluResult(
            intent=guess.intent,
            confidence=min(1.0, max(0.0, guess.confidence)),
            entities=entities,
            sentiment=sentiment,
            model_used=guess.model_used,
            alternatives=guess.alternatives,
        )
        return NluTurn(**{**dict(record), "session": session}, nlu=nlu)

    @property
    def warmed_up(self) -> bool:
        return self._classifier is not None


@dataclass(frozen=True)
class IntentGuess:
    intent: str
    confidence: float
    model_used: str
    alternatives: list[tuple[str, float]] = field(default_factory=list)


def _utc_naive(at: datetime) -> datetime:
    """Relative dates are read against when the message arrived (replays give the same answer), in UTC."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at
