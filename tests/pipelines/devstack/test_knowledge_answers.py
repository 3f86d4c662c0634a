"""The default topology answers an informational question from the help center, end to end: sf.ingress in, a
real worker process with the knowledge base in PostgreSQL+pgvector, the cited answer out on sf.outbound."""

from __future__ import annotations

import json

import yaml

from tests.support.stream import DEFAULT_TOPOLOGY, produce_messages, raw_message, read_answers, read_topics


def test_an_informational_question_comes_back_with_a_help_center_citation(broker, workers, help_center_dsn):
    workers.start(DATABASE_URL=help_center_dsn)
    question = raw_message("kb-1", "webchat", "web-kb", "how long does express delivery take?", "kb-customer")
    produce_messages(broker.bootstrap, [question])

    records = read_answers(broker.bootstrap, {"kb-1"}, timeout_s=60)

    (reply,) = [json.loads(r.value) for r in records if r.topic == "sf.outbound"]
    assert "1 to 2 business days" in reply["text"]
    citation = "Source: Delivery options at checkout (https://help.example-shop.com/shipping/delivery-options)"
    assert reply["text"].endswith(citation)


def test_with_a_model_tier_the_answer_is_composed_guarded_and_its_cost_is_on_the_turns_event(
    broker, workers, help_center_dsn, llm_server, tmp_path
):
    """A real worker process with `llm_tiers` pointing at the real model server: the knowledge answer goes through
    `compose` and `guard`; whatever SmolLM2 wrote, the reply on sf.outbound is grounded or is the extractive one,
    it keeps the article's citation, and the turn's event carries the tier, the tokens and the cost."""
    from operators.policy import check_grounding
    from pipelines.devstack.stack import tier_env
    from pipelines.runtime.settings import PROJECT_DIR
    from tests.support.llm import tier_for

    tier = tier_for(llm_server, "small", max_output_tokens=60)
    # the model shares the two cores with the worker: the knowledge look-up gets more than its 5 s, so that a
    # slow look-up (a template reply, or a hand-over) does not stand in for what is under test
    spec = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    text = yaml.safe_dump(spec, sort_keys=False).replace("timeout_s: 5\n", "timeout_s: 60\n")
    assert "timeout_s: 60" in text
    topology = tmp_path / "topology.yaml"
    topology.write_text(text)
    workers.start(topology, DATABASE_URL=help_center_dsn, SUPPORTFLOW_LLM_TIERS=json.dumps([tier_env(tier)]))
    question = raw_message("kb-llm-1", "webchat", "web-kb-llm", "how long does express delivery take?", "kb-llm")
    produce_messages(broker.bootstrap, [question])

    records = read_topics(
        broker.bootstrap,
        ["sf.outbound", "sf.events.raw"],
        until=lambda rs: {r.topic for r in rs} == {"sf.outbound", "sf.events.raw"},
        timeout_s=180,
    )

    (reply,) = [json.loads(r.value) for r in records if r.topic == "sf.outbound"]
    (event,) = [json.loads(r.value) for r in records if r.topic == "sf.events.raw"]
    citation = "Source: Delivery options at checkout (https://help.example-shop.com/shipping/delivery-options)"
    assert reply["text"].endswith(citation)
    meta = event["metadata"]
    assert (meta["llm_tier"], meta["llm_model"]) == ("small", "smollm2")
    assert meta["llm_tokens_in"] > 0 and meta["llm_tokens_out"] > 0
    assert meta["cost_usd"] == tier.cost_usd(meta["llm_tokens_in"], meta["llm_tokens_out"])
    # sent only if grounded in what the model was given (the article's passages) or else the extractive answer,
    # which is the article's own words: either way grounded in the article
    article = (PROJECT_DIR / "playbooks" / "help_center" / "shipping" / "delivery-options.md").read_text()
    assert check_grounding(reply["text"].removesuffix(citation), [article, question["text"]]) is None
