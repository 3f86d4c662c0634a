"""A tier's settings: where its key comes from, that it is never shown, what a call costs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.llm import TierSpec
from pipelines.runtime.settings import Settings

BASE = {"name": "large", "base_url": "https://api.example.com/v1", "model": "gpt-x"}


def test_the_key_is_a_secret_that_no_repr_or_dump_shows():
    tier = TierSpec.model_validate({**BASE, "api_key": "sk-very-secret"})
    assert "sk-very-secret" not in repr(tier) and "sk-very-secret" not in tier.model_dump_json()
    assert tier.key() == "sk-very-secret"


def test_the_key_can_come_from_a_named_environment_variable(monkeypatch):
    tier = TierSpec.model_validate({**BASE, "api_key_env": "TEST_LLM_KEY"})
    monkeypatch.setenv("TEST_LLM_KEY", "sk-from-env")
    assert tier.key() == "sk-from-env"
    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(ValueError, match="TEST_LLM_KEY is not set"):
        tier.key()


def test_a_key_given_twice_is_refused():
    with pytest.raises(ValidationError, match="not both"):
        TierSpec.model_validate({**BASE, "api_key": "a", "api_key_env": "B"})


def test_cost_is_tokens_times_the_price_per_million():
    tier = TierSpec.model_validate({**BASE, "price_in_per_mtok": 2.5, "price_out_per_mtok": 10.0})
    assert tier.cost_usd(1000, 200) == pytest.approx(0.0025 + 0.002)


def test_settings_read_tiers_from_the_environment_and_refuse_duplicate_names(monkeypatch):
    monkeypatch.setenv("SUPPORTFLOW_LLM_TIERS", '[{"name": "small", "base_url": "http://127.0.0.1:8000/v1", '
                       '"model": "local"}]')  # fmt: skip
    assert [t.name for t in Settings().llm_tiers] == ["small"]
    monkeypatch.setenv("SUPPORTFLOW_LLM_TIERS", f"[{_json(BASE)}, {_json(BASE)}]")
    with pytest.raises(ValidationError, match="each tier name once"):
        Settings()


def _json(value: dict[str, str]) -> str:
    import json

    return json.dumps(value)


@pytest.mark.parametrize("bad", [{"base_url": "ftp://x"}, {"name": "Big Tier"}, {"timeout_s": 0}, {"model": ""}])
def test_a_malformed_tier_is_refused_with_the_field_named(bad):
    with pytest.raises(ValidationError):
        TierSpec.model_validate({**BASE, **bad})
