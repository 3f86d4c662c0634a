"""answer on the project's help center, in a real PostgreSQL with pgvector, with the real embedder: the reply
path plan → answer → authorize → execute → guard → format, and the hand-over through escalate."""

from __future__ import annotations

from pydantic import SecretStr

from connectors.knowledge.lexical import analyse
from operators.answer import Answer, AnswerConfig, cite, extract, sentences_of, word_overlap
from operators.authorize import Authorize
from operators.base import Operator
from operators.emit import Emit
from operators.escalate import Escalate
from operators.execute import Execute
from operators.format import Format
from operators.guard import Guard
from operators.plan import PlaybookPlanner, load_replies
from operators.protocols import DictTable, OperatorContext
from operators.retrieve import KNOWLEDGE_TURNS, Retrieve, RetrieveConfig
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.settings import Settings
from schemas import (
    ConversationEvent,
    Entity,
    Escalation,
    HistoryTurn,
    KnowledgeUse,
    OutboundMessage,
    PlannedTurn,
    RouteDecision,
)
from schemas.knowledge import Passage
from tests.support.operators import T0, FixedClock, routed_turn

REFUNDS_URL = "https://help.example-shop.com/refunds/refund-timelines"
REFUND_QUESTION = "how long until my refund reaches my card?"
UNCOVERED = "do you sell lawn mowers?"


def context(clients: RuntimeClients) -> OperatorContext:
    tables = {"sessions": DictTable(), "identities": DictTable(), "seen": DictTable()}
    return OperatorContext(tables=tables, clock=FixedClock(), clients=clients)


async def planned(ctx: OperatorContext, text: str, intent: str, channel: str = "webchat", **session) -> PlannedTurn:
    turn = routed_turn(intent=intent, text=text, **session)
    turn.message.channel = channel  # type: ignore[assignment]
    return await PlaybookPlanner().run(turn, ctx)


async def looked_up(ctx: OperatorContext, turn: PlannedTurn, answer: Answer | None = None) -> PlannedTurn:
    """retrieve → answer, as the topology runs them."""
    return await (answer or Answer()).run(await Retrieve().run(turn, ctx), ctx)


async def reply_path(ctx: OperatorContext, turn: PlannedTurn) -> OutboundMessage:
    """authorize → execute → guard → format, as the `reply` branch runs them; guard must pass."""
    executed = await Execute().run(await Authorize().run(turn, ctx), ctx)
    guarded = await Guard().run(executed, ctx)
    assert guarded.guard.branch == "pass", guarded.guard.reason
    return (await Format().run(guarded, ctx)).outbound


async def test_a_covered_question_on_web_chat_gets_the_articles_fact_and_a_link_to_it(knowledge_clients):
    ctx = context(knowledge_clients)
    answer = Answer()
    turn = await looked_up(ctx, await planned(ctx, REFUND_QUESTION, "check_refund_policy"), answer)

    assert answer.choose_branch(turn) == "reply"
    assert turn.plan.planner == "knowledge-v1" and turn.plan.knowledge is not None
    assert turn.plan.knowledge.answered and turn.plan.knowledge.cited == ["refunds/refund-timelines.md"]
    outbound = await reply_path(ctx, turn)
    assert "5 to 10 business days" in outbound.text  # the article's table, not the template's wording
    assert outbound.text.endswith(f"Source: How long refunds take ({REFUNDS_URL})")
    assert len(outbound.text) <= AnswerConfig().max_chars["default"]


async def test_the_turns_events_say_which_article_a_reply_cited_and_which_a_hand_over_carried(knowledge_clients):
    ctx = context(knowledge_clients)
    answered = await looked_up(ctx, await planned(ctx, REFUND_QUESTION, "check_refund_policy"))
    guarded = await Guard().run(await Execute().run(await Authorize().run(answered, ctx), ctx), ctx)
    emitted = await Emit().run(await Format().run(guarded, ctx), ctx)
    (event,) = [r for r in emitted.records if isinstance(r, ConversationEvent)]
    assert event.knowledge is not None and event.knowledge.answered
    assert (
        event.knowledge.cited == ["refunds/refund-timelines.md"] and event.knowledge.domain == "billing"
    )  # its front matter's domain
    assert event.knowledge.confidence >= event.knowledge.threshold

    gap = await looked_up(ctx, await planned(ctx, UNCOVERED, "out_of_scope"))
    (handed,) = [r for r in (await Escalate().run(gap, ctx)).records if isinstance(r, ConversationEvent)]
    knowledge = handed.knowledge
    assert knowledge is not None and not knowledge.answered and knowledge.cited == []
    assert gap.plan.knowledge is not None
    assert knowledge.found == list(dict.fromkeys(p.doc_id for p in gap.plan.knowledge.passages))


async def test_asked_how_long_refunds_take_the_answer_quotes_the_articles_timeline_table_not_only_its_side_note(
    knowledge_clients,
):
    # the question matches the article's note on approvals ("within 1 business day") better than its table of
    # timelines, which is in a chunk the retrieval did not return: the answer reads the whole cited article
    ctx = context(knowledge_clients)
    turn = await looked_up(ctx, await planned(ctx, "how long do refunds take?", "check_refund_policy"))

    assert turn.plan.knowledge is not None and turn.plan.knowledge.cited == ["refunds/refund-timelines.md"]
    outbound = await reply_path(ctx, turn)
    assert "Shows on your statement within: 5 to 10 business days" in outbound.text  # a row of the table
    assert len(outbound.text) <= AnswerConfig().max_chars["default"]


async def test_a_covered_question_by_sms_cites_the_title_only_and_fits_the_sms_limit(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await looked_up(ctx, await planned(ctx, REFUND_QUESTION, "check_refund_policy", channel="sms"))

    outbound = await reply_path(ctx, turn)
    assert "5 to 10 business days" in outbound.text
    assert outbound.text.endswith("(Source: How long refunds take)") and "http" not in outbound.text
    assert len(outbound.text) <= AnswerConfig().max_chars["sms"]
    assert len(outbound.parts) <= 2  # two SMS segments at most


async def test_a_follow_up_is_answered_from_the_topic_of_the_earlier_turns(knowledge_clients):
    ctx = context(knowledge_clients)
    earlier = HistoryTurn(role="customer", text="how long do refunds take to show up?", at=T0, message_id="m-0")
    turn = await planned(ctx, "and with PayPal?", "check_refund_policy", history=[earlier])

    answered = await looked_up(ctx, turn)

    assert answered.plan.knowledge is not None and answered.plan.knowledge.answered
    assert "refund" in answered.plan.knowledge.query.lower()
    assert answered.plan.knowledge.cited == ["refunds/refund-timelines.md"]
    assert "PayPal" in (await reply_path(ctx, answered)).text


async def test_a_question_the_knowledge_does_not_cover_goes_to_a_human_with_the_passages_and_no_answer(
    knowledge_clients,
):
    ctx = context(knowledge_clients)
    answer = Answer()
    turn = await looked_up(ctx, await planned(ctx, UNCOVERED, "out_of_scope"), answer)

    assert answer.choose_branch(turn) == "human"
    knowledge = turn.plan.knowledge
    assert knowledge is not None and not knowledge.answered and knowledge.confidence < knowledge.threshold
    assert knowledge.passages and knowledge.cited == []
    emitted = await Escalate().run(turn, ctx)
    assert not any(isinstance(r, OutboundMessage) for r in emitted.records)  # nothing is said in the agent's name
    (escalation,) = [r for r in emitted.records if isinstance(r, Escalation)]
    assert escalation.reason == "knowledge_gap"
    assert [p.chunk_id for p in escalation.passages] == [p.chunk_id for p in knowledge.passages]


async def test_with_the_store_unreachable_the_template_reply_is_sent_and_nothing_raises():
    # nothing listens on port 1: the pool's first connection is refused
    clients = RuntimeClients(Settings(database_url=SecretStr("postgresql://sf:sf@127.0.0.1:1/kb"), triton_url=None))
    ctx = context(clients)
    failures = KNOWLEDGE_TURNS.labels("unavailable")._value.get()
    answer = Answer()
    before = await planned(ctx, REFUND_QUESTION, "check_refund_policy")

    after = await looked_up(ctx, before, answer)

    assert after == before and answer.choose_branch(after) == "reply"
    assert KNOWLEDGE_TURNS.labels("unavailable")._value.get() == failures + 1
    template = load_replies(PlaybookPlanner().config.replies_file)["check_refund_policy"]["default"]
    assert (await reply_path(ctx, after)).text == template
    await clients.close()


async def test_with_a_planner_after_it_a_gap_goes_on_and_the_planner_hands_it_over_when_no_model_plans_it(
    knowledge_clients,
):
    from operators.llm_plan import LlmPlanner

    ctx = context(knowledge_clients)
    answer, planner = Answer(AnswerConfig(gaps_to_reply=True)), LlmPlanner()
    turn = await looked_up(ctx, await planned(ctx, UNCOVERED, "out_of_scope"), answer)
    assert answer.choose_branch(turn) == "reply"

    after = await planner.run(turn, ctx)  # no `llm_tiers`: nothing planned

    assert after == turn and planner.choose_branch(after) == "human"
    (escalation,) = [r for r in (await Escalate().run(after, ctx)).records if isinstance(r, Escalation)]
    assert escalation.reason == "knowledge_gap" and escalation.passages


async def test_an_out_of_scope_question_goes_to_a_human_as_before_when_the_store_is_unreachable():
    clients = RuntimeClients(Settings(database_url=SecretStr("postgresql://sf:sf@127.0.0.1:1/kb"), triton_url=None))
    ctx = context(clients)
    answer = Answer()
    turn = routed_turn(intent="out_of_scope", confidence=0.0, text=UNCOVERED)
    turn.route = RouteDecision(branch="auto", reason="out_of_scope", detail="no known intent matched")

    after = await looked_up(ctx, await PlaybookPlanner().run(turn, ctx), answer)

    assert answer.choose_branch(after) == "human" and after.plan.knowledge is None
    (escalation,) = [r for r in (await Escalate().run(after, ctx)).records if isinstance(r, Escalation)]
    assert (escalation.reason, escalation.passages) == ("out_of_scope", [])
    await clients.close()


async def test_without_a_knowledge_store_configured_the_template_reply_stands():
    ctx = context(RuntimeClients())  # no settings, so no database
    before = await planned(ctx, REFUND_QUESTION, "check_refund_policy")

    assert await looked_up(ctx, before) == before


async def test_a_playbook_turn_passes_untouched(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = routed_turn(intent="track_order", text="where is my order 1000001?")
    turn.nlu.entities = [Entity(type="order_number", value="1000001", start=18, end=25, confidence=0.99)]
    before = await PlaybookPlanner().run(turn, ctx)
    answered = KNOWLEDGE_TURNS.labels("answered")._value.get()

    after = await looked_up(ctx, before)

    assert before.plan.planner == "playbooks-v1"
    assert after == before and after.plan.knowledge is None
    assert KNOWLEDGE_TURNS.labels("answered")._value.get() == answered


def test_an_articles_markdown_becomes_sentences_with_table_rows_under_their_column_names():
    markdown = (
        "Refunds are fast. We send them **at once**; see [Refund policy](https://x/p).\n\n"
        "## Times\n\n| Paid with | Back within |\n|---|---|\n| Card {new} | 5 days |\n\n- Gift card: 1 hour"
    )

    assert sentences_of(markdown) == [
        "Refunds are fast.",
        "We send them at once; see Refund policy.",
        "Card {new} - Back within: 5 days.",
        "Gift card: 1 hour.",
    ]


def test_extract_keeps_the_closest_sentence_and_its_close_neighbours_in_the_articles_order():
    sentences = ["Intro.", "Cards take 5 days.", "PayPal takes 1 day.", "Unrelated topic."]

    assert extract(sentences, [0.2, 0.9, 0.75, 0.85], budget=200, max_sentences=3) == (
        "Cards take 5 days. PayPal takes 1 day. Unrelated topic."
    )
    assert extract(sentences, [0.2, 0.9, 0.6, 0.5], budget=200, max_sentences=3) == "Cards take 5 days."
    assert extract(sentences, [0.2, 0.9, 0.75, 0.85], budget=20, max_sentences=3) == "Cards take 5 days."
    assert extract(["A long sentence about refunds."], [0.9], budget=18, max_sentences=3) == "A long sentence..."


def test_a_sentence_with_the_questions_rare_word_overlaps_more_than_ones_sharing_only_its_common_words():
    sentences = [
        "Card - Refund goes to: The same card; Shows within: 5 days.",
        "PayPal - Refund goes to: Your PayPal account; Shows within: 3 days.",
        "What takes time is your bank.",
    ]

    card, paypal, bank = word_overlap("and with PayPal? refund", sentences, analyse)

    assert paypal > card > bank == 0.0
    assert word_overlap("", sentences, analyse) == [0.0, 0.0, 0.0]


async def test_an_answer_may_repeat_the_contact_details_its_article_publishes_but_guard_still_checks_others(
    knowledge_clients,
):
    ctx = context(knowledge_clients)
    turn = await looked_up(
        ctx, await planned(ctx, "what is your customer service phone number?", "contact_customer_service")
    )
    assert turn.plan.knowledge is not None and turn.plan.knowledge.cited == ["contact/contact-customer-service.md"]
    assert "+1 212 555 0142" in (await reply_path(ctx, turn)).text  # published in the article it quotes

    # the same reply with a number the article does not hold is blocked, as any reply would be
    forged = turn.plan.reply_template.replace("+1 212 555 0142", "+1 415 555 0199")
    turn.plan.reply_template = forged
    executed = await Execute().run(await Authorize().run(turn, ctx), ctx)
    verdict = (await Guard().run(executed, ctx)).guard
    assert (verdict.branch, verdict.reason) == (
        "block",
        "reply PII: reply contains a phone number the customer did not give",
    )


def test_the_citation_links_where_a_link_can_be_followed_and_names_the_title_elsewhere():
    passage = Passage(chunk_id="c", doc_id="d", title="Ways to **pay**", text="", url="https://x/pay", score=1.0)

    for channel in ("webchat", "mobile", "api", "email", "slack", "teams"):
        assert cite(passage, channel) == "Source: Ways to pay (https://x/pay)", channel
    for channel in ("sms", "whatsapp", "voice"):
        assert cite(passage, channel) == "(Source: Ways to pay)", channel
    assert cite(passage.model_copy(update={"url": None}), "webchat") == "(Source: Ways to pay)"


async def _aside(ctx: OperatorContext, question: str, intent: str) -> tuple[PlannedTurn, PlannedTurn]:
    """A cancellation waiting for the identity check, then a side question: (the task's turn, the aside's)."""
    text = "cancel order 1000002 please"
    first = routed_turn(intent="cancel_order", text=text)
    first.nlu.entities = [Entity(type="order_number", value="1000002", start=13, end=20, confidence=0.99)]
    planner = PlaybookPlanner()
    asked = await planner.run(first, ctx)
    assert asked.plan.awaiting == "verification"
    second = routed_turn(intent=intent, text=question)
    second.session = asked.session
    return asked, await planner.run(second, ctx)


async def test_a_side_question_mid_task_is_answered_from_the_help_center_and_the_task_asks_again(
    knowledge_clients,
):
    ctx = context(knowledge_clients)
    asked, aside = await _aside(ctx, f"before that - {REFUND_QUESTION}", "track_refund")
    assert aside.plan.aside is not None, "plan marks the template's answer to the side question"

    answer = Answer()
    answered = await looked_up(ctx, aside, answer)

    assert answer.choose_branch(answered) == "reply" and answered.plan.planner == "playbooks-v1"
    assert answered.plan.knowledge is not None and answered.plan.knowledge.cited == ["refunds/refund-timelines.md"]
    assert answered.session.task is not None and answered.session.task.intent == "cancel_order"
    outbound = await reply_path(ctx, answered)
    assert "5 to 10 business days" in outbound.text
    assert f"Source: How long refunds take ({REFUNDS_URL})" in outbound.text
    # the task's own question follows the answer, its placeholders filled as before
    question = asked.plan.reply_template.replace("{order_number}", "1000002")
    assert outbound.text.endswith(f"Back to your request: {question}")


async def test_a_side_question_the_knowledge_cannot_answer_keeps_its_template_and_the_task(knowledge_clients):
    ctx = context(knowledge_clients)
    _, aside = await _aside(ctx, "by the way, do you sell lawn mowers?", "check_payment_methods")
    assert aside.plan.aside is not None

    answer = Answer()
    kept = KNOWLEDGE_TURNS.labels("kept_template")._value.get()
    after = await looked_up(ctx, aside, answer)

    assert after == aside and answer.choose_branch(after) == "reply", "no hand-over in the middle of a task"
    assert KNOWLEDGE_TURNS.labels("kept_template")._value.get() == kept + 1


async def test_retrieve_attaches_the_passages_and_its_verdict_and_leaves_the_reply_to_answer(knowledge_clients):
    ctx = context(knowledge_clients)
    before = await planned(ctx, REFUND_QUESTION, "check_refund_policy")

    after = await Retrieve().run(before, ctx)

    knowledge = after.plan.knowledge
    assert knowledge is not None and knowledge.answerable and not knowledge.answered
    assert knowledge.passages[0].doc_id == "refunds/refund-timelines.md" and knowledge.cited == []
    assert after.plan.reply_template == before.plan.reply_template and after.plan.planner == "templates-v1"


async def test_a_stricter_min_confidence_on_retrieve_makes_answer_hand_over(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await planned(ctx, REFUND_QUESTION, "check_refund_policy")
    answer = Answer()

    after = await answer.run(await Retrieve(RetrieveConfig(min_confidence=1.0)).run(turn, ctx), ctx)

    assert after.plan.knowledge is not None and after.plan.knowledge.threshold == 1.0
    assert not after.plan.knowledge.answered and answer.choose_branch(after) == "human"


class OnePassageRetriever(Operator[PlannedTurn, PlannedTurn]):
    """A data engineer's own retriever in `retrieve`'s place: it fills the plan's knowledge from elsewhere."""

    name = "one_passage_retriever"
    input_type = PlannedTurn
    output_type = PlannedTurn

    async def run(self, record: PlannedTurn, ctx: OperatorContext) -> PlannedTurn:
        passage = Passage(chunk_id="faq-7#0", doc_id="faq-7", title="Gift wrapping", url="https://wiki.example/faq-7",
                          text="Gift wrapping costs $4 per item. Choose it at checkout.", score=1.0)  # fmt: skip
        use = KnowledgeUse(query=record.message.text, confidence=0.9, threshold=0.5, answerable=True, answered=False,
                           passages=[passage])  # fmt: skip
        return record.model_copy(update={"plan": record.plan.model_copy(update={"knowledge": use})})


async def test_answer_quotes_the_passages_any_retriever_put_on_the_plan(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await planned(ctx, "how much does gift wrapping cost?", "check_payment_methods")

    after = await Answer().run(await OnePassageRetriever().run(turn, ctx), ctx)

    assert after.plan.knowledge is not None and after.plan.knowledge.cited == ["faq-7"]
    text = (await reply_path(ctx, after)).text
    assert "Gift wrapping costs $4 per item." in text and text.endswith("(https://wiki.example/faq-7)")
