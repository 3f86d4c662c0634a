"""What the NLU operator understood of a message."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas._base import Record


class Entity(BaseModel):
    type: str
    value: str = Field(description="the text exactly as written: text[start:end]")
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    confidence: float = Field(ge=0.0, le=1.0)
    normalized: str | None = Field(
        default=None, description="canonical value: ISO date, decimal amount, digits of a phone or order number"
    )
    currency: str | None = Field(default=None, description="ISO 4217 code of an amount, when the text names one")

    @model_validator(mode="after")
    def _span_is_ordered(self) -> Entity:
        if self.end < self.start:
            raise ValueError(f"entity span end {self.end} precedes start {self.start}")
        return self


class Sentiment(BaseModel):
    label: Literal["positive", "neutral", "negative"]
    score: float = Field(ge=-1.0, le=1.0, description="compound polarity, -1 (negative) to 1 (positive)")


class NluResult(Record):
    intent: str
    confidence: float = Field(ge=0.0, le=1.0)
    entities: list[Entity] = Field(default_factory=list)
    sentiment: Sentiment
    model_used: str
    alternatives: list[tuple[str, float]] = Field(default_factory=list)
