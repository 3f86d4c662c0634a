"""compose and guard on the reply path, with a real model server (llama.cpp + SmolLM2-135M) and the project's
help center in a real PostgreSQL with pgvector.

SmolLM2-135M invents freely, which is what these tests need of it: whatever it writes, the customer gets either
a reply whose figures, links and actions come from the sources, or the non-LLM reply. The guard's own decisions
on fixed texts are pinned with replies written here (`Reply` records), not with the model.
"""

from __future__ import annotations

from operators.answer import Answer
from operators.authorize import Authorize
from operators.compose import CheckedSink, Compose, ComposeConfig, fit
from operators.emit import Emit
from operators.execute import Execute
from operators.format import Format
from operators.guard import Guard
from operators.plan import PlaybookPlanner
from operators.policy import check_grounding
from operators.protocols import DictTable, OperatorContext
from operators.retrieve import Retrieve
from pipelines.runtime.clients import RuntimeClients
from schemas import ExecutedTurn, LlmUsage, PlannedTurn, RawConversationEvent, Reply
from tests.support.llm import tier_for
from tests.support.operators import FixedClock, routed_turn

REFUND_QUESTION = "how long until my refund reaches my card?"


def context(clients: RuntimeClients) -> OperatorContext:
    tables = {"sessions": DictTable(), "identities": DictTable(), "seen": DictTable()}
    return OperatorContext(tables=tables, clock=FixedClock(), clients=clients)


async def executed(ctx: OperatorContext, text: str, intent: str, channel: str = "webchat") -> ExecutedTurn:
    turn = routed_turn(intent=intent, text=text)
    turn.message.channel = channel  # type: ignore[assignment]
    looked_up = await Retrieve().run(await PlaybookPlanner().run(turn, ctx), ctx)
    planned: PlannedTurn = await Answer().run(looked_up, ctx)
    return await Execute().run(await Authorize().run(planned, ctx), ctx)


def with_llm(clients: RuntimeClients, server) -> RuntimeClients:
    assert clients.settings is not None
    settings = clients.settings.model_copy(update={"llm_tiers": [tier_for(server, "small", max_output_tokens=60)]})
    return RuntimeClients(settings)


async def test_a_knowledge_answer_is_rewritten_by_the_model_and_only_a_grounded_text_or_the_fallback_leaves(
    knowledge_clients, llm_server
):
    clients = with_llm(knowledge_clients, llm_server)
    ctx = context(clients)
    try:
        turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
        draft = turn.reply.text
        composed = await Compose().run(turn, ctx)
        guarded = await Guard().run(composed, ctx)
        outbound = (await Format().run(guarded, ctx)).outbound
        emitted = await Emit().run(await Format().run(guarded, ctx), ctx)
    finally:
        await clients.close()

    usage = composed.reply.llm
    assert usage is not None and (usage.tier, usage.model) == ("small", "smollm2") and usage.cost_usd > 0
    assert composed.reply.fallback_text == draft and draft in composed.reply.sources
    citation = turn.plan.knowledge.citation  # type: ignore[union-attr]
    assert citation and composed.reply.text.endswith(citation)  # the article stays cited as `answer` cited it
    assert guarded.guard.branch == "pass"
    if guarded.guard.kind == "llm_reply_rejected":
        assert outbound.text == draft
    else:
        said = [*composed.reply.sources, REFUND_QUESTION]
        assert outbound.text == composed.reply.text and check_grounding(outbound.text, said) is None
    event = next(r for r in emitted.records if isinstance(r, RawConversationEvent))
    assert (event.metadata.llm_tier, event.metadata.llm_model) == ("small", "smollm2")
    assert event.metadata.cost_usd == usage.cost_usd and event.metadata.llm_tokens_out == usage.tokens_out


async def test_a_playbook_turn_is_never_sent_to_a_model(knowledge_clients, llm_server):
    clients = with_llm(knowledge_clients, llm_server)
    ctx = context(clients)
    try:
        turn = await executed(ctx, "where is my order?", "track_order")
        composed = await Compose().run(turn, ctx)
    finally:
        await clients.close()

    assert turn.plan.planner.startswith("playbook") or turn.plan.planner not in ComposeConfig().planners
    assert composed == turn and composed.reply.llm is None


async def test_without_a_configured_model_the_reply_is_the_non_llm_one(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
    assert await Compose().run(turn, ctx) == turn


async def test_an_unreachable_model_leaves_the_non_llm_reply(knowledge_clients):
    from connectors._process import free_port
    from connectors.llm import TierSpec

    assert knowledge_clients.settings is not None
    dead = TierSpec(name="small", base_url=f"http://127.0.0.1:{free_port()}/v1", model="x", retries=0)
    clients = RuntimeClients(knowledge_clients.settings.model_copy(update={"llm_tiers": [dead]}))
    ctx = context(clients)
    try:
        turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
        composed = await Compose().run(turn, ctx)
    finally:
        await clients.close()
    assert composed == turn


def generated(turn: ExecutedTurn, text: str) -> ExecutedTurn:
    """`turn` as if the model had written `text` (guard's decision on a known text, not the model's)."""
    usage = LlmUsage(tier="small", model="m", tokens_in=10, tokens_out=5, cost_usd=0.001)
    reply = Reply(text=text, confidence=turn.reply.confidence, llm=usage, fallback_text=turn.reply.text,
                  sources=[*turn.reply.sources, turn.reply.text])  # fmt: skip
    return turn.model_copy(update={"reply": reply})


async def test_guard_sends_the_non_llm_reply_when_the_generated_one_invents_a_figure(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
    guarded = await Guard().run(generated(turn, "Refunds reach your card in 2 days."), ctx)

    assert guarded.guard.branch == "pass" and guarded.guard.kind == "llm_reply_rejected"
    assert "'2'" in guarded.guard.reason
    assert guarded.reply.text == turn.reply.text and guarded.reply.fallback_text is None
    assert guarded.reply.llm is not None and guarded.reply.llm.cost_usd == 0.001  # spent, even if not sent


async def test_guard_sends_the_non_llm_reply_when_the_generated_one_promises_an_action_no_tool_took(
    knowledge_clients,
):
    ctx = context(knowledge_clients)
    turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
    guarded = await Guard().run(generated(turn, "Good news: I've refunded your order already."), ctx)
    assert guarded.guard.kind == "llm_reply_rejected" and guarded.reply.text == turn.reply.text


async def test_guard_sends_the_non_llm_reply_when_the_generated_one_leaks_an_email(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
    guarded = await Guard().run(generated(turn, "Write to bob.smith@example.org for your refund."), ctx)
    assert guarded.guard.kind == "llm_reply_rejected" and "PII" in guarded.guard.reason
    assert guarded.reply.text == turn.reply.text


async def test_guard_passes_a_grounded_generated_reply_unchanged(knowledge_clients):
    ctx = context(knowledge_clients)
    turn = await executed(ctx, REFUND_QUESTION, "check_refund_policy")
    text = "A refund to your credit card shows on your statement within 5 to 10 business days."
    guarded = await Guard().run(generated(turn, text), ctx)
    assert (guarded.guard.branch, guarded.guard.kind, guarded.reply.text) == ("pass", None, text)


def test_fit_cuts_after_a_whole_sentence_or_gives_up():
    assert fit("One. Two two. Three three three.", 14) == "One. Two two."
    assert fit("A very long first sentence.", 5) is None
    assert fit("  spaced   out  ", 20) == "spaced out"


class Preview:
    """The web chat's side of a streamed reply: what was shown, and how often it was cleared."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.restarts = 0

    async def token(self, text: str) -> None:
        self.shown.append(text)

    async def restart(self) -> None:
        self.restarts += 1
        self.shown.clear()


SOURCES = ["Refunds reach your card 5 to 10 business days after we receive the item."]


def checked(preview: Preview) -> CheckedSink:
    return CheckedSink(preview, lambda sentence: check_grounding(sentence, SOURCES) is None)


async def test_checked_preview_shows_each_sentence_once_it_ends_and_passes():
    preview = Preview()
    sink = checked(preview)
    for piece in ["Refunds reach ", "your card in 5 to", " 10 business days. ", "After we receive the item"]:
        await sink.token(piece)
    assert preview.shown == ["Refunds reach your card in 5 to 10 business days. "]  # the last has not ended


async def test_checked_preview_stops_and_clears_at_the_first_sentence_guard_would_reject():
    preview = Preview()
    sink = checked(preview)
    await sink.token("Refunds reach your card in 5 to 10 business days. Expect it in 2 days. ")
    await sink.token("Refunds reach your card. ")
    assert preview.shown == [] and preview.restarts == 1


async def test_checked_preview_starts_over_when_the_gateway_falls_back_to_another_tier():
    preview = Preview()
    sink = checked(preview)
    await sink.token("Call <untrusted> now. ")  # the first tier echoed its prompt: nothing shown
    await sink.restart()
    await sink.token("Refunds reach your card in 5 to 10 business days. ")
    assert preview.shown == ["Refunds reach your card in 5 to 10 business days. "] and preview.restarts == 0
