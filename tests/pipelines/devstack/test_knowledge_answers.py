"""The default topology answers an informational question from the help center, end to end: sf.ingress in, a
real worker process with the knowledge base in PostgreSQL+pgvector, the cited answer out on sf.outbound; a gap
goes to a human with the passages, a follow-up is answered with the earlier turn, and a rollback changes the
answer the running worker gives."""

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
    # the model shares the two cores with the worker (and the rest of the suite): the knowledge look-up gets
    # more than its 5 s and each operator more than the stage's 30 s, so that a slow look-up (a template reply,
    # a hand-over) or a slow model call (a dead letter) does not stand in for what is under test
    spec = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    spec["stages"]["agent"]["operator_timeout_s"] = 240
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
        timeout_s=240,  # the look-up and the model call, on a machine the whole suite shares (pytest allows 300)
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


def test_a_question_the_help_center_cannot_answer_goes_to_a_human_with_the_passages(broker, workers, help_center_dsn):
    workers.start(DATABASE_URL=help_center_dsn)
    produce_messages(broker.bootstrap, [raw_message("kb-gap", "webchat", "web-gap", "do you sell lawn mowers?", "gap")])

    records = read_answers(broker.bootstrap, {"kb-gap"}, timeout_s=60)

    assert not [r for r in records if r.topic == "sf.outbound"], "nothing is said in the agent's name"
    (escalation,) = [json.loads(r.value) for r in records if r.topic == "sf.escalations"]
    assert escalation["reason"] == "knowledge_gap"
    assert escalation["passages"] and all(p["doc_id"].endswith(".md") for p in escalation["passages"])


def test_a_follow_up_is_answered_with_the_earlier_turn_through_the_stack(broker, workers, help_center_dsn):
    workers.start(DATABASE_URL=help_center_dsn)
    first = raw_message("kb-fu-1", "webchat", "web-fu", "how long do refunds take to show up?", "fu")
    produce_messages(broker.bootstrap, [first])
    read_answers(broker.bootstrap, {"kb-fu-1"}, timeout_s=60)
    produce_messages(broker.bootstrap, [raw_message("kb-fu-2", "webchat", "web-fu", "and with PayPal?", "fu")])

    records = read_answers(broker.bootstrap, {"kb-fu-1", "kb-fu-2"}, timeout_s=60)

    (reply,) = [json.loads(r.value) for r in records if r.topic == "sf.outbound" and b"kb-fu-2" in r.value]
    assert "PayPal" in reply["text"] and "10 business days" in reply["text"]
    assert reply["text"].endswith("(https://help.example-shop.com/refunds/refund-timelines)")


def test_a_rollback_changes_the_answer_the_running_workers_give(broker, workers, postgres_dsn, onnx_embedder, tmp_path):
    """A new release of one article reaches the running worker's answers; rolling its domain back brings the
    old answer back, with no restart and nothing re-embedded."""
    import asyncio
    import shutil

    from connectors.knowledge.pgvector import PgVectorStore
    from connectors.knowledge.sources.folder import FolderSource
    from pipelines.knowledge.ingest import default_chunker, ingest
    from tests.support.knowledge import HELP_CENTER

    folder = tmp_path / "help_center"
    shutil.copytree(HELP_CENTER, folder)
    article = folder / "shipping" / "delivery-options.md"

    async def publish() -> str:
        """Ingest the folder; the release of the delivery article's domain (logistics, its front matter says)."""
        store = await PgVectorStore.open(postgres_dsn)
        try:
            source = FolderSource(folder, domain="support")
            report = await ingest(source, "support", onnx_embedder, default_chunker, store)
            (logistics,) = [r.release_id for r in report.releases if r.domain == "logistics"]
            return logistics
        finally:
            await store.close()

    async def rollback(release_id: str) -> None:
        store = await PgVectorStore.open(postgres_dsn)
        try:
            await store.rollback(release_id)
        finally:
            await store.close()

    first_release = asyncio.run(publish())
    workers.start(DATABASE_URL=postgres_dsn)

    def ask(message_id: str) -> str:
        question = "how long does express delivery take?"
        produce_messages(broker.bootstrap, [raw_message(message_id, "webchat", f"web-{message_id}", question)])
        records = read_answers(broker.bootstrap, {message_id}, timeout_s=60)
        replies = [json.loads(r.value) for r in records if r.topic == "sf.outbound" and message_id.encode() in r.value]
        assert len(replies) == 1, [json.loads(r.value).get("reason") for r in records]
        return str(replies[0]["text"])

    assert "1 to 2 business days" in ask("kb-rb-1")
    text = article.read_text()
    assert "| Express | Your door | 1 to 2 business days |" in text
    article.write_text(
        text.replace("| Express | Your door | 1 to 2 business days |", "| Express | Your door | Next day |")
    )
    asyncio.run(publish())
    assert "Next day" in ask("kb-rb-2")

    asyncio.run(rollback(first_release))

    assert "1 to 2 business days" in ask("kb-rb-3")
