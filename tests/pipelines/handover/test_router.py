"""The escalation router's rules, on the pure router: priority, matching, capacity, presence, replays."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.handover import EscalationRouter, PriorityRule, RouterOptions, load_agents, load_categories
from schemas import AgentSpec, HistoryTurn, Message, OutboundMessage, RouterCommand, WorkspaceState
from tests.support.handover import T0, agent, at, command, escalation, online

CATEGORIES = load_categories()


def router(*agents: AgentSpec, rule: PriorityRule | None = None, **options: object) -> EscalationRouter:
    return EscalationRouter(list(agents), rule or PriorityRule(), CATEGORIES, RouterOptions(**options))  # type: ignore[arg-type]


def drain_texts(r: EscalationRouter) -> list[str]:
    return [m.text for m in r.drain_messages() if isinstance(m, OutboundMessage)]


def serve_in_order(r: EscalationRouter, agent_id: str, count: int, start_s: float = 1000) -> list[str]:
    """Bring a capacity-1 agent online and resolve what they get, `count` times: the order served."""
    served = []
    r.on_command(online(agent_id), at(start_s))
    for i in range(count):
        held = r.agent_state(agent_id)
        assert held is not None and len(held.assigned) == 1
        served.append(held.assigned[0])
        r.on_command(
            command("resolve", agent_id, escalation_id=held.assigned[0], resolution_code="done"), at(start_s + i + 1)
        )
    return served


def test_priority_vip_tier_then_severity_then_waiting_time():
    r = router(agent("ann", capacity=1))
    r.on_escalation(escalation("standard-early"), at(0))
    r.on_escalation(escalation("standard-late"), at(10))
    r.on_escalation(escalation("platinum", tier="platinum"), at(20))
    r.on_escalation(escalation("urgent", priority="urgent"), at(30))
    r.on_escalation(escalation("gold-low", tier="gold", priority="low"), at(40))
    # scores: urgent 0+70, platinum 40+10, gold+low 20+0, standard+normal 0+10 (+2 per minute waited)
    assert [r.position(x) for x in ("urgent", "platinum", "gold-low", "standard-early", "standard-late")] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert serve_in_order(r, "ann", 5) == ["urgent", "platinum", "gold-low", "standard-early", "standard-late"]


def test_waiting_long_enough_outranks_a_vip():
    r = router(agent("ann", capacity=1))
    r.on_escalation(escalation("old"), at(0))
    r.on_escalation(escalation("gold-late", tier="gold"), at(11 * 60))  # gold is worth 20 points = 10 minutes waited
    r.on_escalation(escalation("gold-early", tier="gold"), at(9 * 60))
    assert serve_in_order(r, "ann", 3, start_s=3600) == ["gold-early", "old", "gold-late"]


def test_the_configured_rule_changes_the_order():
    rule = PriorityRule(
        tier_weights={"standard": 0, "platinum": 1000},
        severity_weights={"normal": 0, "urgent": 5},
        per_waited_minute=0,
    )
    r = router(agent("ann", capacity=1), rule=rule)
    r.on_escalation(escalation("urgent", priority="urgent"), at(0))
    r.on_escalation(escalation("platinum", tier="platinum"), at(60))
    r.on_escalation(escalation("first"), at(1))
    r.on_escalation(escalation("second"), at(2))
    assert serve_in_order(r, "ann", 4) == ["platinum", "urgent", "first", "second"]
    assert r.entry("platinum").priority_score == 1000  # type: ignore[union-attr]


def test_scores_grow_with_waiting_and_are_republished_if_asked():
    r = router(agent("ann"))
    r.on_escalation(escalation("x"), at(0))
    assert r.entry("x").priority_score == 10  # type: ignore[union-attr]
    assert r.tick(at(60)) == [] and r.entry("x").priority_score == 12, "fresh in memory, not republished"  # type: ignore[union-attr]
    r = router(agent("ann"), rule=PriorityRule(publish_step=1.0))
    r.on_escalation(escalation("x"), at(0))
    assert r.tick(at(10)) == [], "a change smaller than publish_step is not republished"
    (row,) = r.tick(at(60))
    assert row.key == "entry:x" and row.entry is not None and row.entry.priority_score == 12


def test_skill_and_language_matching():
    r = router(
        agent("refunds-en", skills=["refund"]),  # a category
        agent("orders-de", skills=["track_order", "cancel_order"], languages=["de"]),  # intents
        agent("any-fr", skills=["*"], languages=["fr"]),
    )
    for name in ("refunds-en", "orders-de", "any-fr"):
        r.on_command(online(name), at(0))
    r.on_escalation(escalation("refund-en", intent="track_refund"), at(1))
    r.on_escalation(escalation("order-de", intent="track_order", language="de-AT"), at(2))
    r.on_escalation(escalation("invoice-fr", intent="get_invoice", language="fr"), at(3))
    r.on_escalation(escalation("refund-de", intent="get_refund", language="de"), at(4))  # nobody: German refunds
    r.on_escalation(escalation("order-en", intent="track_order"), at(5))  # nobody: English orders
    holder = {x: r.entry(x).agent_id for x in ("refund-en", "order-de", "invoice-fr", "refund-de", "order-en")}  # type: ignore[union-attr]
    assert holder == {
        "refund-en": "refunds-en",
        "order-de": "orders-de",
        "invoice-fr": "any-fr",
        "refund-de": None,
        "order-en": None,
    }
    # what no agent can take waits without holding up those behind it
    r.on_escalation(escalation("refund-en-2", intent="get_refund"), at(6))
    assert r.entry("refund-en-2").agent_id == "refunds-en"  # type: ignore[union-attr]
    assert r.expected_wait_s("refund-de") is None, "no one online can take it: no promise of a time"


def test_capacity_and_lowest_load():
    r = router(agent("ann", capacity=4), agent("bob", capacity=2))
    r.on_command(online("ann"), at(0))
    r.on_command(online("bob"), at(0))
    for i in range(7):
        r.on_escalation(escalation(f"x{i}"), at(i + 1))
    ann, bob = r.agent_state("ann"), r.agent_state("bob")
    assert ann is not None and bob is not None
    # lowest load (held / capacity, then held, then id): x0 ann 0/4 = bob 0/2 -> ann; x1 bob 0/2 < ann 1/4;
    # x2 ann 1/4 < bob 1/2; x3 ann 2/4 = bob 1/2, bob holds fewer; x4, x5 ann (bob is full); x6 waits
    assert (ann.assigned, bob.assigned) == (["x0", "x2", "x4", "x5"], ["x1", "x3"])
    assert r.entry("x6").status == "waiting" and r.waiting_count() == 1  # type: ignore[union-attr]
    r.on_command(command("resolve", "bob", escalation_id="x1", resolution_code="done"), at(100))
    assert r.entry("x6").agent_id == "bob", "the freed slot goes to the next waiting"  # type: ignore[union-attr]
    assert r.waiting_count() == 0


def test_presence_away_keeps_offline_hands_back():
    r = router(agent("ann", capacity=2), agent("bob", capacity=2))
    r.on_command(online("ann"), at(0))
    r.on_escalation(escalation("x1"), at(1))
    r.on_escalation(escalation("x2"), at(2))
    r.on_command(command("presence", "ann", presence="away"), at(3))
    r.on_escalation(escalation("x3"), at(4))
    assert r.agent_state("ann").assigned == ["x1", "x2"]  # type: ignore[union-attr]
    assert r.entry("x3").status == "waiting", "away takes nothing new"  # type: ignore[union-attr]
    drain_texts(r)

    rows = r.on_command(command("presence", "ann", presence="offline"), at(5))
    assert r.agent_state("ann").assigned == []  # type: ignore[union-attr]
    assert [r.entry(x).status for x in ("x1", "x2", "x3")] == ["waiting"] * 3  # type: ignore[union-attr]
    assert r.entry("x1").enqueued_at == at(1), "handed back, it keeps its place in line"  # type: ignore[union-attr]
    assert r.entry("x1").transfers[-1]["reason"] == "offline"  # type: ignore[union-attr]
    assert len(drain_texts(r)) == 2, "each customer handed back is told"
    assert rows[-1].key == "agent:ann" and rows[-1].agent is not None and rows[-1].agent.presence == "offline"

    r.on_command(online("bob"), at(6))
    assert r.agent_state("bob").assigned == ["x1", "x2"], "the oldest first"  # type: ignore[union-attr]


def test_follow_ups_attach_to_the_open_entry():
    r = router(agent("ann"))
    r.on_escalation(escalation("x1", conversation="conv-c1"), at(0))
    rows = r.on_escalation(escalation("x2", conversation="conv-c1", text="hello?"), at(5))
    assert [row.key for row in rows] == ["entry:x1"]
    entry = r.entry("x1")
    assert entry is not None and [f.escalation_id for f in entry.follow_ups] == ["x2"] and r.entry("x2") is None
    assert r.waiting_count() == 1
    r.on_command(online("ann"), at(6))
    r.on_command(command("resolve", "ann", escalation_id="x1", resolution_code="done"), at(7))
    r.on_escalation(escalation("x3", conversation="conv-c1"), at(8))
    assert r.entry("x3") is not None, "after a resolution a new hand-over is a new entry"


def test_a_replayed_escalation_or_command_changes_nothing():
    r = router(agent("ann", capacity=1), agent("bob", capacity=1))
    first = escalation("x1", conversation="conv-c1")
    follow = escalation("x2", conversation="conv-c1")
    r.on_escalation(first, at(0))
    r.on_escalation(follow, at(1))
    go_online = online("ann", command_id="c-online")
    go_offline = command("presence", "ann", command_id="c-offline", presence="offline")
    r.on_command(go_online, at(2))
    r.on_command(go_offline, at(3))
    r.on_command(online("ann", command_id="c-online-again"), at(4))
    resolve = command("resolve", "ann", command_id="c-resolve", escalation_id="x1", resolution_code="done")
    r.on_command(resolve, at(5))
    snapshot = [e.model_dump() for e in r.entries()], r.agent_state("ann")
    drain_texts(r)

    for cmd in (go_online, go_offline, resolve):
        assert r.on_command(cmd, at(10)) == [] and r.outcome(cmd.command_id) == "replayed"
    assert r.on_escalation(first, at(11)) == [] and r.on_escalation(follow, at(11)) == []
    assert ([e.model_dump() for e in r.entries()], r.agent_state("ann")) == snapshot
    assert r.drain_messages() == []


def test_refused_commands_change_nothing_and_stay_refused():
    r = router(agent("ann", capacity=1), agent("bob", capacity=1), agent("sue", role="supervisor"))
    for name in ("ann", "bob"):
        r.on_command(online(name), at(0))
    r.on_escalation(escalation("x1"), at(1))
    r.on_escalation(escalation("x2"), at(2))
    steal = command("resolve", "bob", command_id="steal", escalation_id="x1", resolution_code="done")
    r.on_command(steal, at(3))
    assert r.outcome("steal") == "rejected: held by another agent" and r.entry("x1").status == "assigned"  # type: ignore[union-attr]
    full = command("transfer", "ann", command_id="to-full", escalation_id="x1", to_agent="bob")
    r.on_command(full, at(4))
    assert r.outcome("to-full") == "rejected: target agent is at capacity"
    r.on_command(command("resolve", "bob", escalation_id="x2", resolution_code="done"), at(5))
    assert r.on_command(full, at(6)) == [], "a refused command replayed later stays refused"
    assert r.entry("x1").agent_id == "ann"  # type: ignore[union-attr]
    r.on_command(command("resolve", "sue", escalation_id="x1", resolution_code="closed"), at(7))
    assert r.entry("x1").status == "resolved", "a supervisor may close anyone's conversation"  # type: ignore[union-attr]


def test_transfers_warm_and_to_a_queue():
    r = router(agent("ann"), agent("bob"), agent("cat", queues=["billing"]))
    for name in ("ann", "bob", "cat"):
        r.on_command(online(name), at(0))
    r.on_escalation(escalation("x1"), at(1))
    assert r.entry("x1").agent_id == "ann"  # type: ignore[union-attr]
    drain_texts(r)
    r.on_command(command("transfer", "ann", escalation_id="x1", to_agent="bob", warm=True), at(2))
    entry = r.entry("x1")
    assert entry is not None and entry.agent_id == "bob" and r.agent_state("ann").assigned == []  # type: ignore[union-attr]
    assert entry.transfers[-1] | {"at": None} == {
        "from": "ann", "to": "bob", "to_queue": None, "warm": True, "at": None, "by": "ann", "reason": "transfer",
    }  # fmt: skip
    assert drain_texts(r) == ["Bob is joining the conversation. Ann has shared your case, so you need not repeat it."]
    r.on_command(command("transfer", "bob", escalation_id="x1", to_queue="billing"), at(3))
    assert (r.entry("x1").queue, r.entry("x1").agent_id) == ("billing", "cat")  # type: ignore[union-attr]
    assert [e.escalation_id for e in r.visible_to("cat")] == ["x1"] and r.visible_to("ann") == []


def test_a_knowledge_gap_hand_over_tells_the_customer_the_help_center_had_no_reliable_answer():
    r = router(agent("ann", capacity=1), default_handle_time_s=240)
    r.on_command(online("ann"), at(0))
    r.on_escalation(escalation("x1"), at(1))  # Ann takes it: no queued notice
    gap = escalation("x2").model_copy(update={"reason": "knowledge_gap"})
    r.on_escalation(gap, at(2))
    r.on_escalation(escalation("x3"), at(3))

    texts = drain_texts(r)
    assert texts[1].startswith("I couldn't find a reliable answer to that in our help center, so I won't guess. ")
    assert "number 1 in line" in texts[1]
    assert texts[2].startswith("I've passed your conversation to our team"), "other reasons keep their notice"


def test_customer_notices_once_each_with_expected_wait_and_honest_timeout():
    r = router(agent("ann", capacity=1), human_wait_timeout_s=120, default_handle_time_s=240)
    r.on_command(online("ann"), at(0))
    r.on_escalation(escalation("x1"), at(1))
    r.on_escalation(escalation("x2"), at(2))
    r.on_escalation(escalation("x3"), at(3))
    texts = drain_texts(r)
    assert texts[0] == "Ann from our team is now looking after your conversation."
    assert "number 1 in line and the expected wait is about 4 minutes" in texts[1]
    assert "number 2 in line and the expected wait is about 8 minutes" in texts[2]
    assert r.expected_wait_s("x3") == 480 and r.position("x3") == 2

    r.tick(at(100))
    assert drain_texts(r) == []
    r.tick(at(123))
    timeouts = r.drain_messages()
    assert [m.customer_id for m in timeouts] == ["x2", "x3"]
    assert all("WAIT" in m.text and "CALLBACK" in m.text and "EMAIL" in m.text for m in timeouts)  # type: ignore[union-attr]
    r.tick(at(200))
    assert r.drain_messages() == [], "told once"

    r.on_escalation(escalation("x3-reply", conversation="conv-x3", text="please call me back"), at(201))
    assert r.entry("x3").customer_choice == "callback"  # type: ignore[union-attr]
    (ack,) = r.drain_messages()
    assert isinstance(ack, OutboundMessage) and ack.in_reply_to == "m-x3-reply" and "call you back" in ack.text
    notices = r.entry("x3").notices  # type: ignore[union-attr]
    assert notices == ["queued", "no_human-0", "choice-callback"]


def test_resolve_hands_the_conversation_back_to_the_ai():
    r = router(agent("ann"))
    r.on_command(online("ann"), at(0))
    r.on_escalation(escalation("x1"), at(1))
    r.on_command(command("human_replied", "ann", escalation_id="x1"), at(30))
    r.on_command(command("resolve", "ann", escalation_id="x1", resolution_code="refunded"), at(90))
    entry = r.entry("x1")
    assert entry is not None and (entry.status, entry.resolution_code) == ("resolved", "refunded")
    assert entry.first_human_reply_at == at(30) and entry.resolved_at == at(90)
    handback = [m for m in r.drain_messages() if isinstance(m, Message)]
    assert len(handback) == 1 and handback[0].control == "handback" and handback[0].customer_id == "x1"
    assert r.average_handle_time_s() == 89


def test_restore_rebuilds_the_same_router_and_repairs_a_torn_write():
    agents = [agent("ann", capacity=2), agent("bob", capacity=1)]
    r = router(*agents)
    table: dict[str, WorkspaceState] = {}

    def keep(rows: list[WorkspaceState]) -> None:
        for row in rows:
            table.pop(row.key, None)
            table[row.key] = row

    keep(r.on_command(online("ann"), at(0)))
    keep(r.on_command(online("bob"), at(0)))
    for i in range(5):
        keep(r.on_escalation(escalation(f"x{i}", tier="gold" if i == 3 else "standard"), at(i + 1)))
    keep(r.on_command(command("resolve", "ann", escalation_id="x0", resolution_code="done"), at(10)))

    again = router(*agents)
    again.restore(table.values())
    assert again.tick(at(11)) == [] and r.tick(at(11)) == []
    assert [e.model_dump() for e in again.entries()] == [e.model_dump() for e in r.entries()]
    for name in ("ann", "bob"):
        assert again.visible_to(name) == r.visible_to(name)
        assert again.agent_state(name) == r.agent_state(name)

    # a crash after ann's "offline" row but before her entries' rows: she went offline holding two
    torn = dict(table)
    ann = torn["agent:ann"].agent
    assert ann is not None and len(ann.assigned) == 2
    torn["agent:ann"] = WorkspaceState(key="agent:ann", agent=ann.model_copy(update={"presence": "offline"}))
    repaired = router(*agents)
    repaired.restore(torn.values())
    rows = repaired.tick(at(12))
    assert repaired.agent_state("ann").assigned == []  # type: ignore[union-attr]
    assert {e.status for e in repaired.entries() if e.escalation_id in ann.assigned} == {"waiting"}
    assert "agent:ann" in [row.key for row in rows]


def test_resolved_entries_leave_the_table_after_the_retention():
    r = router(agent("ann"), resolved_retention_s=3600)
    r.on_command(online("ann"), at(0))
    r.on_escalation(escalation("x1"), at(1))
    r.on_command(command("resolve", "ann", escalation_id="x1", resolution_code="done"), at(2))
    r.tick(at(1000))
    assert r.drain_tombstones() == []
    r.tick(at(3700))
    assert r.drain_tombstones() == ["entry:x1"] and r.entry("x1") is None


def test_rows_never_show_one_escalation_with_two_agents():
    r = router(agent("ann", capacity=1), agent("bob", capacity=1))
    r.on_command(online("ann"), at(0))
    r.on_command(online("bob"), at(0))
    r.on_escalation(escalation("x1"), at(1))
    rows = r.on_command(command("transfer", "ann", escalation_id="x1", to_agent="bob"), at(2))
    assert [row.key for row in rows] == ["entry:x1", "agent:ann", "agent:bob"], "the loser's row before the gainer's"


def test_config_files(tmp_path: Path):
    assert CATEGORIES["get_refund"] == "refund" and len(set(CATEGORIES.values())) == 12
    good = tmp_path / "agents.yaml"
    good.write_text(
        "agents:\n"
        "  - {agent_id: ann, skills: [refund], languages: [en, de], capacity: 2, password_hash: 'scrypt$x'}\n"
        "  - {agent_id: sue, role: supervisor, password_hash: 'scrypt$y'}\n"
    )
    assert [a.agent_id for a in load_agents(good)] == ["ann", "sue"]
    twice = tmp_path / "twice.yaml"
    twice.write_text("agents:\n  - {agent_id: ann, password_hash: x}\n  - {agent_id: ann, password_hash: y}\n")
    with pytest.raises(ValidationError, match="appears twice"):
        load_agents(twice)
    with pytest.raises(ValidationError):
        RouterCommand(command_id="c", kind="transfer", agent_id="ann", escalation_id="x", to_agent="a", to_queue="q")
    assert T0.tzinfo is not None


def test_the_outbox_is_sent_again_after_a_crash_and_cleared_once_sent():
    r = router(agent("ann"))
    rows = r.on_command(online("ann"), at(0)) + r.on_escalation(escalation("x1"), at(1))
    (notice,) = r.drain_messages()
    entry_row = next(row for row in rows if row.entry is not None)
    assert entry_row.entry is not None and entry_row.entry.outbox == [notice], "the row records it before it is sent"

    crashed = router(agent("ann"))  # the rows reached the topic, the notice maybe not
    crashed.restore(rows)
    assert crashed.drain_messages() == [notice], "sent again, under the same reply id"

    r.mark_sent([notice])
    (cleared,) = r.tick(at(2))
    assert cleared.entry is not None and cleared.entry.outbox == [] and cleared.entry.notices == ["assigned-1"]
    fresh = router(agent("ann"))
    fresh.restore([*rows, cleared])
    assert fresh.drain_messages() == []


def test_a_follow_up_keeps_only_the_turns_its_entry_does_not_hold():
    def turns(*ids: str) -> list[HistoryTurn]:
        return [HistoryTurn(role="customer", text=f"said {i}", at=T0, message_id=i) for i in ids]

    r = router(agent("ann"))
    first = escalation("x1", conversation="conv-c1").model_copy(update={"history": turns("m1", "m2")})
    later = escalation("x2", conversation="conv-c1").model_copy(update={"history": turns("m1", "m2", "m3", "m4")})
    r.on_escalation(first, at(0))
    r.on_escalation(later, at(1))
    entry = r.entry("x1")
    assert entry is not None and [t.message_id for t in entry.follow_ups[0].history] == ["m3", "m4"]
    assert entry.follow_ups[0].text == later.text and entry.follow_ups[0].nlu == later.nlu


def test_a_decision_on_prepared_actions_is_kept_in_the_entry_and_survives_a_restore():
    r = router(agent("ann"), agent("bob"))
    table: dict[str, WorkspaceState] = {}
    for rows in (r.on_command(online("ann"), at(0)), r.on_escalation(escalation("x0"), at(1))):
        table.update({row.key: row for row in rows})
    holder = r.entry("x0").agent_id
    other = "bob" if holder == "ann" else "ann"
    decision = {"decision": "rejected", "agent_id": holder, "at": at(2).isoformat(), "outcome": "rejected"}
    r.on_command(command("decided", other, escalation_id="x0", decision=decision), at(2))
    assert r.entry("x0").decision is None, "only the agent holding it (or a supervisor) decides"
    rows = r.on_command(command("decided", holder, escalation_id="x0", decision=decision), at(3))
    table.update({row.key: row for row in rows})
    again = router(agent("ann"), agent("bob"))
    again.restore(table.values())
    assert again.entry("x0").decision == decision
    with pytest.raises(ValueError, match="decision approved or rejected"):
        command("decided", holder, escalation_id="x0", decision={"decision": "maybe"})
