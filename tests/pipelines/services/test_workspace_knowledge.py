"""The knowledge base in the agent workspace: a supervisor searches it and previews an article; an agent taking a
knowledge_gap hand-over sees the passages the knowledge base found.

A real `supportflow workspace` process runs against a real tansu broker, with DATABASE_URL on a PostgreSQL
database holding the project's help center (ingested by the real pipeline). Sam is a supervisor, Ana an agent
of queue `general`; nobody is online, so escalations wait in `general`, where both may read them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connectors.knowledge.pgvector import PgVectorStore
from connectors.postgres import PostgresStore
from operators.protocols import KnowledgeOptions
from pipelines.devstack.embedded import EmbeddedBroker, free_port
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.settings import Settings
from pipelines.services.workspace import WorkspaceError
from pipelines.services.workspace.knowledge import WorkspaceKnowledge
from schemas import (
    ConversationEvent,
    Escalation,
    EventAction,
    EventKnowledge,
    EventMessage,
    EventMetadata,
    EventNlu,
    EventSentiment,
    utcnow,
)
from schemas.knowledge import Passage
from tests.support.handover import WORKSPACE_PASSWORDS, escalation, workspace_agents_file
from tests.support.postgres import _admin, with_database
from tests.support.stream import DEFAULT_TOPOLOGY, WorkerPool
from tests.support.stream import produce as produce_records

SECRET = "k" * 40
PASSWORDS = WORKSPACE_PASSWORDS
QUESTION = "how long does express delivery take?"
EXPRESS = "Delivery options at checkout"


@dataclass
class Desk:
    url: str
    bootstrap: str

    def client(self, agent: str | None = None) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        if agent is not None:
            signed = client.post("/workspace/api/login", json={"agent_id": agent, "password": PASSWORDS[agent]})
            assert signed.status_code == 200, signed.text
        return client


@contextmanager
def running_workspace(tmp: Path, database_url: str) -> Iterator[Desk]:
    """A broker of its own and a workspace process on it, with DATABASE_URL on `database_url`."""
    with EmbeddedBroker(log_file=tmp / "tansu.log") as broker:
        pool = WorkerPool(broker.bootstrap, tmp)
        pool.ensure_topics()
        port = free_port()
        env = {
            "SUPPORTFLOW_DATA_DIR": str(tmp / "data"),
            "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(workspace_agents_file(tmp / "agents.yaml", ("ana", "sam"))),
            "SUPPORTFLOW_WORKSPACE_SECRET": SECRET,
            "DATABASE_URL": database_url,
        }
        pool._spawn("workspace", ["workspace", "--port", str(port)], DEFAULT_TOPOLOGY, True, env)
        try:
            yield Desk(f"http://127.0.0.1:{port}", broker.bootstrap)
        finally:
            pool.stop_all()


@pytest.fixture(scope="module")
def desk(help_center_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with running_workspace(tmp_path_factory.mktemp("workspace"), help_center_dsn) as started:
        yield started


@pytest.fixture
def empty_knowledge_dsn(postgres_server: str) -> Iterator[str]:
    """A migrated database whose knowledge base holds nothing: no document, no live index."""
    name = f"sf_test_kb_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    dsn = with_database(postgres_server, name)

    async def migrate() -> None:
        await (await PgVectorStore.open(dsn)).close()

    try:
        asyncio.run(migrate())
        yield dsn
    finally:
        asyncio.run(_admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def search(client: httpx.Client, query: str) -> httpx.Response:
    return client.get("/workspace/api/knowledge/search", params={"q": query})


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def knowledge_gap(escalation_id: str, passages: list[Passage]) -> Escalation:
    """A hand-over as `escalate` writes it when `answer` found passages it could not answer from."""
    handed = escalation(escalation_id, intent="out_of_scope", created=utcnow(), text=QUESTION)
    return handed.model_copy(update={"reason": "knowledge_gap", "passages": passages})


ARTICLE = "shipping/delivery-options.md"


def turn_event(
    n: int, event_type: str, conversation: str, channel: str, intent: str, minutes: int
) -> ConversationEvent:
    """A turn's redacted event as the sink receives it: a reply citing ARTICLE, or a knowledge_gap hand-over
    that carried it among its passages."""
    answered = event_type == "turn_processed"
    gap = None if answered else EventAction(type="escalation", name="knowledge_gap", status="queued")
    return ConversationEvent(
        event_id=f"e-art-{n}",
        event_type=event_type,  # type: ignore[arg-type]
        timestamp=datetime(2026, 1, 5, 9, tzinfo=UTC) + timedelta(minutes=minutes),
        conversation_id=conversation,
        session_id=f"s-{conversation}",
        customer_id=f"u-{conversation}",
        channel=channel,
        message=EventMessage(id=f"m-art-{n}", content=QUESTION, type="text"),
        nlu=EventNlu(intent=intent, confidence=0.9, sentiment=EventSentiment(label="neutral", score=0.0)),
        action=gap,
        metadata=EventMetadata(latency_ms=20.0, model_used="keyword"),
        knowledge=EventKnowledge(
            confidence=0.8 if answered else 0.3,
            threshold=0.5,
            answered=answered,
            cited=[ARTICLE] if answered else [],
            found=[ARTICLE, "shipping/tracking.md"],
            domain="support",
        ),
    )


@pytest.fixture(scope="module")
def article_uses(help_center_dsn: str) -> list[str]:
    """Three conversations used ARTICLE, written by the sink's own store: c-old's reply cited it, c-new's
    reply cited it, c-gap handed it over last (its escalation in the store); another article's use and a
    follow-up are noise. Written twice (a replayed batch). Returns the conversations newest first."""
    events = [
        turn_event(1, "turn_processed", "c-old", "email", "delivery_period", 0),
        turn_event(2, "escalated", "c-gap", "webchat", "out_of_scope", 25),
        turn_event(3, "turn_processed", "c-new", "sms", "delivery_period", 20),
        turn_event(4, "turn_processed", "c-old", "email", "delivery_period", 5),  # the same conversation again
    ]
    other = turn_event(5, "turn_processed", "c-other", "webchat", "faq", 30)
    assert other.knowledge is not None
    events.append(other.model_copy(update={"knowledge": other.knowledge.model_copy(update={"cited": ["x.md"]})}))
    follow = turn_event(6, "escalated", "c-gap", "webchat", "out_of_scope", 40)
    events.append(
        follow.model_copy(update={"action": EventAction(type="escalation", name="with_human", status="follow_up")})
    )
    handed = escalation("x-art-gap", intent="out_of_scope", created=datetime(2026, 1, 5, 9, 25, tzinfo=UTC))
    handed = handed.model_copy(update={"conversation_id": "c-gap", "customer_id": "u-c-gap", "reason": "knowledge_gap"})

    async def write() -> None:
        store = PostgresStore(help_center_dsn)
        try:
            for _ in range(2):
                await store.write("sf.events", [*events, handed])
        finally:
            await store.close()

    asyncio.run(write())
    return ["c-gap", "c-new", "c-old"]


def conversations(client: httpx.Client, doc_id: str, **params: object) -> httpx.Response:
    return client.get(f"/workspace/api/knowledge/articles/{doc_id}/conversations", params=params)


def test_a_supervisor_sees_the_conversations_that_used_an_article_newest_first(desk, article_uses):
    found = conversations(desk.client("sam"), ARTICLE)
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["doc_id"], body["total"], body["next_offset"]) == (ARTICLE, 3, None)
    rows = body["conversations"]
    assert [r["conversation_id"] for r in rows] == article_uses
    gap, new, old = rows
    assert (gap["outcome"], gap["channel"], gap["intent"]) == ("handed_over", "webchat", "out_of_scope")
    assert gap["escalation_id"] == "x-art-gap" and gap["at"] == "2026-01-05T09:25:00+00:00"
    assert gap["uses"] == 1, "the follow-up to the human carried no passages"
    assert (new["outcome"], new["channel"], new["escalation_id"]) == ("answered", "sms", None)
    assert (old["outcome"], old["uses"], old["at"]) == ("answered", 2, "2026-01-05T09:05:00+00:00")


def test_an_articles_conversations_come_a_page_at_a_time(desk, article_uses):
    sam = desk.client("sam")
    first = conversations(sam, ARTICLE, limit=2).json()
    assert [r["conversation_id"] for r in first["conversations"]] == article_uses[:2]
    assert (first["total"], first["limit"], first["next_offset"]) == (3, 2, 2)
    rest = conversations(sam, ARTICLE, limit=2, offset=first["next_offset"]).json()
    assert [r["conversation_id"] for r in rest["conversations"]] == article_uses[2:]
    assert rest["next_offset"] is None
    unused = conversations(sam, "shipping/never-cited.md").json()
    assert (unused["total"], unused["conversations"]) == (0, [])
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "ten"}):
        refused = conversations(sam, ARTICLE, **bad)
        assert refused.status_code == 400 and "whole number" in refused.json()["error"], bad


def test_an_articles_conversations_are_for_supervisors_only(desk, article_uses):
    assert conversations(desk.client(), ARTICLE).status_code == 401
    refused = conversations(desk.client("ana"), ARTICLE)
    assert refused.status_code == 403 and "supervisors" in refused.json()["error"]


def test_a_supervisor_searches_the_help_center_as_the_agent_would(desk):
    found = search(desk.client("sam"), QUESTION)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["passages"] and body["passages"][0]["title"] == EXPRESS
    top = body["passages"][0]
    assert "1 to 2 business days" in " ".join(p["text"] for p in body["passages"] if p["doc_id"] == top["doc_id"])
    assert top["url"] == "https://help.example-shop.com/shipping/delivery-options"
    assert top["score"] > 0 and body["answerable"] is True and body["confidence"] >= body["threshold"]


def test_knowledge_search_needs_a_signed_in_supervisor(desk):
    anonymous = search(desk.client(), QUESTION)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "sign in first"
    article = desk.client().get("/workspace/api/knowledge/articles/shipping/delivery-options.md")
    assert article.status_code == 401
    agent = search(desk.client("ana"), QUESTION)
    assert agent.status_code == 403 and "supervisors" in agent.json()["error"]
    assert desk.client("ana").get("/workspace/api/knowledge/articles/x.md").status_code == 403


def test_an_empty_too_long_or_control_character_query_is_a_400_that_says_why(desk):
    sam = desk.client("sam")
    for query in ("", "   \n\t "):
        empty = search(sam, query)
        assert empty.status_code == 400 and "type a question" in empty.json()["error"], query
    missing = sam.get("/workspace/api/knowledge/search")
    assert missing.status_code == 400 and "type a question" in missing.json()["error"]
    long = search(sam, "delivery " * 100)
    assert long.status_code == 400 and "at most 500 characters" in long.json()["error"]
    control = search(sam, "express\x00delivery")
    assert control.status_code == 400 and "U+0000" in control.json()["error"]
    article = sam.get("/workspace/api/knowledge/articles/help%00.md")
    assert article.status_code == 400 and "U+0000" in article.json()["error"]


def test_a_supervisor_previews_the_article_a_passage_comes_from(desk):
    sam = desk.client("sam")
    top = search(sam, QUESTION).json()["passages"][0]
    preview = sam.get(f"/workspace/api/knowledge/articles/{top['doc_id']}")
    assert preview.status_code == 200, preview.text
    article = preview.json()
    assert article["doc_id"] == top["doc_id"] and article["title"] == EXPRESS
    assert article["url"] == top["url"] and article["section"] == "shipping"
    assert article["domain"] == top["domain"] and article["release"].startswith(f"{top['domain']}@")
    assert "1 to 2 business days" in article["text"]


def test_an_unknown_article_is_a_404(desk):
    unknown = desk.client("sam").get("/workspace/api/knowledge/articles/shipping/no-such-article.md")
    assert unknown.status_code == 404 and "no article 'shipping/no-such-article.md'" in unknown.json()["error"]


def test_a_knowledge_gap_hand_over_shows_the_passages_found_in_the_entry(desk):
    found = [Passage.model_validate(p) for p in search(desk.client("sam"), QUESTION).json()["passages"][:3]]
    handed = knowledge_gap("x-gap", found)
    produce_records(desk.bootstrap, "sf.escalations", [(handed.partition_key(), handed.to_bytes())])
    ana = desk.client("ana")
    wait_for(lambda: ana.get("/workspace/api/entries/x-gap").status_code == 200, "the escalation in the workspace")
    detail = ana.get("/workspace/api/entries/x-gap").json()
    shown = [(p["chunk_id"], p["title"], p["url"], p["score"]) for p in detail["passages"]]
    assert shown == [(p.chunk_id, p.title, p.url, p.score) for p in found]
    assert detail["entry"]["escalation"]["passages"][0]["text"] == found[0].text, "kept whole through the router"
    assert detail["summary"]["reason"] == "knowledge_gap"


def test_a_supervisor_sees_the_passages_searches_and_previews_in_the_page(desk, browser):
    sam = desk.client("sam")
    found = [Passage.model_validate(p) for p in search(sam, QUESTION).json()["passages"][:2]]
    handed = knowledge_gap("x-page", found)
    produce_records(desk.bootstrap, "sf.escalations", [(handed.partition_key(), handed.to_bytes())])
    wait_for(lambda: sam.get("/workspace/api/entries/x-page").status_code == 200, "the escalation in the workspace")

    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(desk.url + "/workspace")
    page.fill("#login-agent", "sam")
    page.fill("#login-password", PASSWORDS["sam"])
    page.click("#login-submit")
    page.click(".queue-row[data-escalation-id='x-page']", timeout=20_000)
    card = page.wait_for_selector("#passages-card:not([hidden]) .passage", timeout=15_000)
    link = card.query_selector("a")
    assert link is not None and link.inner_text() == EXPRESS and link.get_attribute("href") == found[0].url
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert f"{found[0].score:.3f}" in page.inner_text("#passages-card")

    page.fill("#kb-query", QUESTION)
    page.press("#kb-query", "Enter")
    result = page.wait_for_selector("#kb-results .kb-result", timeout=30_000)
    assert EXPRESS in result.inner_text()
    result.query_selector("button.kb-preview").click()  # type: ignore[union-attr]
    page.wait_for_selector("#kb-article[open] h3:has-text('Delivery options')", timeout=15_000)
    assert "1 to 2 business days" in page.inner_text("#kb-article-text")

    page.click("#kb-article button:has-text('Close')")
    page.wait_for_selector("#kb-article:not([open])", state="attached")
    page.fill("#kb-query", " ")
    page.press("#kb-query", "Enter")
    page.wait_for_selector("#kb-results .error:has-text('type a question')")


def test_the_article_preview_lists_the_conversations_that_used_it_and_opens_a_hand_over(desk, browser, article_uses):
    sam = desk.client("sam")
    handed = knowledge_gap("x-art-gap", []).model_copy(update={"conversation_id": "c-gap", "customer_id": "u-c-gap"})
    produce_records(desk.bootstrap, "sf.escalations", [(handed.partition_key(), handed.to_bytes())])
    wait_for(lambda: sam.get("/workspace/api/entries/x-art-gap").status_code == 200, "the hand-over in the workspace")

    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(desk.url + "/workspace")
    page.fill("#login-agent", "sam")
    page.fill("#login-password", PASSWORDS["sam"])
    page.click("#login-submit")
    page.fill("#kb-query", QUESTION)
    page.press("#kb-query", "Enter")
    page.wait_for_selector("#kb-results .kb-result", timeout=30_000)
    page.click(f"#kb-results .kb-result:has-text('{EXPRESS}') button.kb-preview")
    page.wait_for_selector("#kb-article[open] #kb-article-uses .kb-use >> nth=2", timeout=15_000)
    uses = page.query_selector_all("#kb-article-uses .kb-use")
    assert [u.get_attribute("data-conversation-id") for u in uses] == article_uses
    assert "handed over" in uses[0].inner_text() and "webchat · out_of_scope" in uses[0].inner_text()
    assert "answered" in uses[1].inner_text() and "sms · delivery_period" in uses[1].inner_text()
    assert uses[1].query_selector("a.open-conversation") is None, "answered alone: no hand-over to open"
    uses[0].query_selector("a.open-conversation").click()  # type: ignore[union-attr]
    page.wait_for_selector("#kb-article:not([open])", state="attached")
    page.wait_for_selector(".queue-row.open[data-escalation-id='x-art-gap']", timeout=15_000)
    page.wait_for_selector("#conv-why dd:has-text('knowledge_gap')", timeout=15_000)


def test_the_search_answers_503_on_an_empty_knowledge_base(empty_knowledge_dsn, tmp_path):
    with running_workspace(tmp_path, empty_knowledge_dsn) as desk:
        sam = desk.client("sam")
        empty = search(sam, QUESTION)
        assert empty.status_code == 503 and "nothing was ingested yet" in empty.json()["error"], empty.text
        article = sam.get("/workspace/api/knowledge/articles/shipping/delivery-options.md")
        assert article.status_code == 404, "an empty base has no article to preview"
        assert sam.get("/workspace/api/queue").json() == {"entries": []}, "the rest of the workspace still works"


def test_an_unreachable_knowledge_base_is_a_503_that_says_so():
    """Nothing listens at DATABASE_URL: the search and the preview refuse clearly instead of failing with a 500."""
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/kb"
    clients = RuntimeClients(Settings(database_url=SecretStr(dsn), triton_url=None))
    knowledge = WorkspaceKnowledge(clients, KnowledgeOptions())

    async def ask() -> list[WorkspaceError]:
        refusals = []
        try:
            for call in (knowledge.search(QUESTION), knowledge.article("shipping/delivery-options.md")):
                with pytest.raises(WorkspaceError) as refused:
                    await call
                refusals.append(refused.value)
        finally:
            await clients.close()
        return refusals

    for refusal in asyncio.run(ask()):
        assert refusal.status == 503 and "unreachable" in refusal.message, refusal.message
