"""A model tier as the operator configures it: where it is served, what it may spend, what it costs."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["TierSpec"]


class TierSpec(BaseModel):
    """One OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, TGI, Ollama, llama.cpp...) and its limits.

    The key is a secret: give it as `api_key` through the secrets folder or the environment, or name the
    variable that holds it with `api_key_env`; it is never logged (`SecretStr`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="the tier's name, as operators ask for it")
    base_url: str = Field(pattern=r"^https?://", description="the endpoint's OpenAI-compatible /v1 base URL")
    model: str = Field(min_length=1, description="the model name the endpoint expects")
    api_key: SecretStr | None = Field(default=None, description="the endpoint's key (a secret)")
    api_key_env: str | None = Field(default=None, description="the environment variable holding the key")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="longest one call may take, stream included")
    first_token_timeout_s: float = Field(default=5.0, gt=0, le=300, description="longest wait for the first token")
    retries: int = Field(default=1, ge=0, le=5, description="more attempts after a connection error, 429 or 5xx")
    max_output_tokens: int = Field(default=300, ge=1, le=32_000, description="token budget of one reply")
    max_prompt_tokens: int = Field(
        default=3_000, ge=1, le=1_000_000, description="a longer prompt is not sent to this tier (estimated: chars/4)"
    )
    budget_usd_per_hour: float | None = Field(
        default=None, gt=0, description="spend ceiling per worker process and rolling hour; past it the tier is skipped"
    )
    price_in_per_mtok: float = Field(default=0.0, ge=0, description="USD per million prompt tokens")
    price_out_per_mtok: float = Field(default=0.0, ge=0, description="USD per million completion tokens")
    temperature: float = Field(default=0.0, ge=0, le=2)

    @model_validator(mode="after")
    def _one_key_source(self) -> TierSpec:
        if self.api_key is not None and self.api_key_env:
            raise ValueError(f"tier {self.name}: give api_key or api_key_env, not both")
        return self

    def key(self) -> str:
        """The key to send; endpoints without auth (a local llama.cpp) get a placeholder the client requires."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ValueError(f"tier {self.name}: environment variable {self.api_key_env} is not set")
            return value
        return "no-key"

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1_000_000
