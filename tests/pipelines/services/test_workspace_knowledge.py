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
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connectors.knowledge.pgvector import PgVectorStore
from operators.protocols import KnowledgeOptions
from pipelines.devstack.embedded import EmbeddedBroker, free_port
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.settings import Settings
from pipelines.services.workspace import WorkspaceError
from pipelines.services.workspace.knowledge import WorkspaceKnowledge
from schemas import Escalation, utcnow
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
