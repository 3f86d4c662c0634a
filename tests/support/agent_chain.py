"""One customer's turns through the agent stage's operators, NLU given, on the real commerce backend.

Shared by the operator tests that hold whole conversations (`tests/operators/test_execute.py`,
`tests/operators/test_shop_playbooks.py`). Alice is C000001. `LlmAgent` adds the language-model operators
on given tiers, as topology.yaml chains them (`plan -> llm_plan -> answer -> authorize -> execute -> compose ->
guard`), with `route` letting out-of-scope messages through as the shipped topology does.
"""

from __future__ import annotations

from typing import Any

from connectors.backends.commerce import IdentityLockout, commerce_tools
from connectors.backends.registry import ToolRegistry
from operators.answer import Answer, AnswerConfig
from operators.authorize import Authorize
from operators.compose import Compose, ComposeConfig
from operators.emit import Emit
from operators.enrich_context import EnrichContext
from operators.escalate import Escalate
from operators.execute import Execute
from operators.format import Format
from operators.guard import Guard
from operators.llm_plan import LlmPlanner
from operators.plan import PlaybookPlanner
from operators.protocols import DictTable, OperatorContext
from operators.retrieve import Retrieve
from operators.route import Route, RouteConfig
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.settings import Settings
from schemas import Escalation, GuardedTurn, Message, NluResult, NluTurn, OutboundMessage, RoutedTurn, Sentiment
from tests.support.operators import FixedClock

ALICE = "C000001"


class Agent:
    """One customer's messages through the agent stage's operators, the session kept in a table."""

    def __init__(self, pool: Any, clock: FixedClock, per_customer: int, clients: RuntimeClients | None = None) -> None:
        """`clock` is the agent's and the backend's: one time for the session and the lockout."""
        self.clock = clock
        lockout = IdentityLockout(max_per_customer=per_customer, max_per_source=100, clock=clock.now)
        self.ctx = OperatorContext(
            tables={"sessions": DictTable(), "profiles": DictTable()},
            clock=clock,
            tools=ToolRegistry(tools=commerce_tools(pool, lockout=lockout)),
            clients=clients or RuntimeClients(),
        )
        self.route = Route()
        self.sent = 0

    async def say(
        self, text: str, intent: str = "out_of_scope", sender: str = "web-alice"
    ) -> OutboundMessage | Escalation:
        self.sent += 1
        message = Message(
            message_id=f"m-{self.sent}",
            conversation_id="conv-alice",
            customer_id=ALICE,
            channel="webchat",
            sender=sender,
            address_verified=True,
            text=text,
            received_at=self.clock.now(),
        )
        ctx = self.ctx
        context = await EnrichContext().run(message, ctx)
        assert context is not None
        confidence = 0.95 if intent != "out_of_scope" else 0.3
        nlu = NluResult(intent=intent, confidence=confidence, sentiment=Sentiment(label="neutral", score=0.0),
                        model_used="test")  # fmt: skip
        routed = await self.route.run(NluTurn(**dict(context), nlu=nlu), ctx)
        assert routed is not None
        if routed.route.branch == "human":
            return _only(await Escalate().run(routed, ctx), Escalation)
        return await self.auto(routed)

    async def auto(self, routed: RoutedTurn) -> OutboundMessage | Escalation:
        """`route`'s auto branch, as topology.yaml chains it without the language-model operators."""
        ctx = self.ctx
        authorized = await Authorize().run(await PlaybookPlanner().run(routed, ctx), ctx)
        if authorized.authorization.branch == "block":
            return _only(await Escalate().run(authorized, ctx), Escalation)
        guarded = await Guard().run(await Execute().run(authorized, ctx), ctx)
        if guarded.guard.branch == "block":
            return _only(await Escalate().run(guarded, ctx), Escalation)
        return _only(await Emit().run(await Format().run(guarded, ctx), ctx), OutboundMessage)

    def new_session(self) -> None:
        self.clock.advance(minutes=31)  # past enrich_context's idle limit


class LlmAgent(Agent):
    """The agent with the language-model operators on `tiers` (one gateway for the conversation).

    `guarded` keeps each turn that reached `guard`, so a test can read what guard decided and why.
    """

    def __init__(self, pool: Any, clock: FixedClock, tiers: list[Any], per_customer: int = 5) -> None:
        settings = Settings(llm_tiers=tiers, database_url=None)
        super().__init__(pool, clock, per_customer, clients=RuntimeClients(settings))
        self.route = Route(RouteConfig(confidence_threshold=0.85, out_of_scope_to_auto=True))
        names = [t.name for t in tiers]
        # one instance each for the conversation, as a stream worker keeps them
        self.plan, self.retrieve, self.answer, self.llm_plan = (
            PlaybookPlanner(),
            Retrieve(),
            Answer(AnswerConfig(gaps_to_reply=True)),
            LlmPlanner(),
        )
        self.authorize, self.execute, self.guard = Authorize(), Execute(), Guard()
        self.compose = Compose(ComposeConfig(tiers=names))
        self.guarded: list[GuardedTurn] = []

    async def auto(self, routed: RoutedTurn) -> OutboundMessage | Escalation:
        ctx = self.ctx
        templated = await self.plan.run(routed, ctx)
        looked_up = await self.answer.run(await self.retrieve.run(templated, ctx), ctx)
        if self.answer.choose_branch(looked_up) == "human":
            return _only(await Escalate().run(looked_up, ctx), Escalation)
        planned = await self.llm_plan.run(looked_up, ctx)
        if self.llm_plan.choose_branch(planned) == "human":
            return _only(await Escalate().run(planned, ctx), Escalation)
        authorized = await self.authorize.run(planned, ctx)
        if authorized.authorization.branch == "block":
            return _only(await Escalate().run(authorized, ctx), Escalation)
        composed = await self.compose.run(await self.execute.run(authorized, ctx), ctx)
        guarded = await self.guard.run(composed, ctx)
        self.guarded.append(guarded)
        if guarded.guard.branch == "block":
            return _only(await Escalate().run(guarded, ctx), Escalation)
        return _only(await Emit().run(await Format().run(guarded, ctx), ctx), OutboundMessage)

    async def close(self) -> None:
        clients = self.ctx.clients
        assert isinstance(clients, RuntimeClients)
        await clients.close()


def _only(emitted: Any, kind: type[Any]) -> Any:
    found = [r for r in emitted.records if isinstance(r, kind)]
    assert len(found) == 1, emitted.records
    return found[0]
