"""HybridRetriever on a real PostgreSQL with pgvector and the real embedder: passages with every
retriever's score, the answerability verdict, filters, and the lexical index following releases."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.knowledge.confidence import AnswerabilityModel
from connectors.knowledge.fusion import FusionConfig
from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.protocols import SearchFilters
from connectors.knowledge.retriever import DEFAULT_ANSWERABILITY, HybridRetriever
from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import default_chunker, ingest
from tests.support.knowledge import CountingEmbedder, write_files

RETURNS = """---
title: Returning an item
---
You can send an item back within 30 days of delivery. Print the prepaid label from your order page, pack
the item in its box and drop the parcel at any post office. We refund the card you paid with.
"""

SHIPPING = """---
title: Shipping to Norway
---
We ship to Norway from our warehouse in Sweden. Standard delivery to Norway takes four to six working days
and costs 9 EUR; orders over 80 EUR ship free.
"""

PASSWORD = """---
title: Resetting your password
domain: account
---
Click "Forgot password" on the sign-in page and follow the link we email you within a few minutes.
"""

RETOURS = """---
title: Retourner un article
language: fr
---
Vous pouvez renvoyer un article dans les 30 jours suivant la livraison avec l'étiquette prépayée.
"""


async def fill(store: PgVectorStore, embedder: CountingEmbedder, root: Path, domain: str = "support") -> None:
    await ingest(FolderSource(root, domain=domain), domain, embedder, default_chunker, store)


@pytest.fixture
def help_center(tmp_path: Path) -> Path:
    return write_files(
        tmp_path / "help",
        {"returns.md": RETURNS, "shipping.md": SHIPPING, "password.md": PASSWORD, "fr/retours.md": RETOURS},
    )


async def test_a_question_gets_fused_passages_with_each_retrievers_score_and_a_verdict(kb_store, embedder, help_center):
    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)

    found = await retriever.retrieve("how much is delivery to Norway and how long does it take")

    top = found.passages[0]
    assert top.doc_id == "shipping.md"
    assert set(top.scores) == {"lexical", "dense"} and top.scores["lexical"] > 0 and 0 < top.scores["dense"] <= 1
    assert top.score == max(p.score for p in found.passages)
    assert found.dense[0].doc_id == "shipping.md" and found.lexical[0].doc_id == "shipping.md"
    assert found.answerable and found.confidence >= found.threshold == DEFAULT_ANSWERABILITY.threshold


async def test_a_question_the_help_center_does_not_cover_is_handed_over(kb_store, embedder, help_center):
    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)

    found = await retriever.retrieve("do you sell lawn mowers")

    assert found.passages  # something always ranks; the verdict is what says not to answer from it
    assert not found.answerable and found.confidence < found.threshold


async def test_identifiers_are_cleaned_and_a_follow_up_is_completed_from_the_conversation(
    kb_store, embedder, help_center
):
    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)

    found = await retriever.retrieve("and how long does it take?", history=["do you ship to Norway? order 88231-XK"])

    assert "norway" in found.query.lower() and "88231" not in found.query
    assert found.passages[0].doc_id == "shipping.md"


async def test_domain_and_language_filters_apply_to_both_retrievers(kb_store, embedder, help_center):
    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)

    account = await retriever.retrieve("send an item back for a refund", SearchFilters(domains=("account",)))
    assert {p.doc_id for p in account.passages} == {"password.md"}
    assert {p.doc_id for p in account.lexical + account.dense} <= {"password.md"}

    french = await retriever.retrieve("renvoyer un article", SearchFilters(language="fr"))
    assert {p.doc_id for p in french.passages} == {"fr/retours.md"}


async def test_the_lexical_index_follows_a_new_release_and_a_rollback_and_is_not_rebuilt_otherwise(
    kb_store, embedder, help_center
):
    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)
    assert (await retriever.retrieve("parcel post office label")).passages[0].doc_id == "returns.md"
    await retriever.retrieve("forgot password")
    assert retriever.builds == 1  # nothing changed between the two queries

    (help_center / "returns.md").write_text(RETURNS.replace("post office", "parcel locker"), encoding="utf-8")
    await fill(kb_store, embedder, help_center)  # support@2 goes live
    live = await retriever.retrieve("parcel locker")
    assert retriever.builds == 2 and "parcel locker" in live.lexical[0].text

    await kb_store.rollback("support@1")
    rolled_back = await retriever.retrieve("parcel locker")
    assert retriever.builds == 3
    assert all("parcel locker" not in p.text for p in rolled_back.lexical + rolled_back.dense)

    named = await retriever.retrieve("parcel locker", SearchFilters(release="support@2"))
    assert "parcel locker" in named.lexical[0].text and "parcel locker" in named.passages[0].text


async def test_a_confidence_fitted_for_another_embedding_model_is_refused(kb_store, embedder):
    other = AnswerabilityModel((1.0, 0.0, 0.0), 0.0, (0.0,) * 3, (1.0,) * 3, 0.5, model_id="intfloat/e5-small")
    with pytest.raises(ValueError, match="fitted for intfloat/e5-small"):
        HybridRetriever(kb_store, embedder, embedder.model_id, answerability=other)


async def test_an_empty_query_finds_nothing_and_is_not_answerable(kb_store, embedder, help_center):
    await fill(kb_store, embedder, help_center)
    found = await HybridRetriever(kb_store, embedder, embedder.model_id).retrieve("  +44 20 7946 0958 ")
    assert found.passages == [] and not found.answerable


async def test_the_dense_side_filters_the_hnsw_walk_by_the_visible_chunks_and_falls_back_when_too_few_pass(
    kb_store, embedder, help_center
):
    await fill(kb_store, embedder, help_center)
    only_account = SearchFilters(domains=("account",))
    fast = HybridRetriever(kb_store, embedder, embedder.model_id)
    found = await fast.retrieve("how long does shipping to Norway take", only_account)
    assert {p.doc_id for p in found.dense} == {"password.md"} and fast.dense_fallbacks == 0

    # two candidates from a walk of two: the nearest are shipping and returns, none in the account domain
    narrow = HybridRetriever(kb_store, embedder, embedder.model_id, candidates=2, overfetch=1)
    found = await narrow.retrieve("how long does shipping to Norway take", only_account)
    assert narrow.dense_fallbacks == 1 and [p.doc_id for p in found.dense] == ["password.md"]


async def test_an_article_is_read_whole_in_its_order_and_a_document_that_is_not_live_has_none(
    kb_store, embedder, tmp_path
):
    sections = "\n\n".join(
        f"## Part {n}\n\n" + " ".join(f"Sentence {n}.{i} about part {n} of the guide." for i in range(12))
        for n in range(1, 4)
    )
    root = write_files(tmp_path / "guide", {"guide.md": f"---\ntitle: A long guide\n---\n{sections}\n"})
    await fill(kb_store, embedder, root)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)

    article = await retriever.article("guide.md")

    text = "\n".join(p.text for p in article)
    assert len(article) >= 3 and {p.doc_id for p in article} == {"guide.md"}
    assert text.index("## Part 1") < text.index("## Part 2") < text.index("## Part 3")
    assert text.index("Sentence 3.0") < text.index("Sentence 3.11")
    assert await retriever.article("missing.md") == []


async def test_the_titles_lists_lift_the_titled_article_and_a_rebuild_embeds_only_titles_not_seen_before(
    kb_store, embedder, help_center
):
    await fill(kb_store, embedder, help_center)
    chunks_only = FusionConfig("rrf", {"lexical": 0.5, "dense": 0.5}, rrf_k=5)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)  # the default fusion weighs the titles
    before = embedder.passages_embedded

    found = await retriever.retrieve("shipping to norway")

    assert found.passages[0].doc_id == "shipping.md" and "titles" in found.timings_ms
    assert embedder.passages_embedded - before == 4  # the four articles' titles, once
    plain = await HybridRetriever(kb_store, embedder, embedder.model_id, fusion=chunks_only).retrieve(
        "shipping to norway"
    )
    assert found.passages[0].score > plain.passages[0].score  # the titles' share on top of the chunks'

    (help_center / "returns.md").write_text(RETURNS.replace("post office", "parcel locker"), encoding="utf-8")
    await fill(kb_store, embedder, help_center)  # a new release: the index is rebuilt, the titles are the same
    before = embedder.passages_embedded
    await retriever.retrieve("parcel locker")
    assert retriever.builds == 2 and embedder.passages_embedded - before == 0


async def test_with_a_refresh_window_a_new_release_is_seen_once_the_window_has_passed_and_not_asked_before(
    kb_store, embedder, help_center
):
    await fill(kb_store, embedder, help_center)
    now = [100.0]
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id, refresh_s=1.0, clock=lambda: now[0])
    asked = 0
    generation = kb_store.search_generation

    async def counted() -> str:
        nonlocal asked
        asked += 1
        return await generation()

    kb_store.search_generation = counted  # type: ignore[method-assign]
    await retriever.retrieve("parcel post office label")
    (help_center / "returns.md").write_text(RETURNS.replace("post office", "parcel locker"), encoding="utf-8")
    await fill(kb_store, embedder, help_center)  # support@2 goes live

    now[0] += 0.5
    within = await retriever.retrieve("parcel locker")
    await retriever.article("returns.md")
    assert asked == 1 and retriever.builds == 1, "inside the window the store is not asked again"
    assert all("parcel locker" not in p.text for p in within.lexical)

    now[0] += 0.6
    after = await retriever.retrieve("parcel locker")
    assert asked == 2 and retriever.builds == 2
    assert "parcel locker" in after.lexical[0].text


async def test_a_question_that_stops_waiting_leaves_the_index_build_running_for_the_next(
    kb_store, embedder, help_center
):
    import asyncio

    await fill(kb_store, embedder, help_center)
    retriever = HybridRetriever(kb_store, embedder, embedder.model_id)
    reads = 0
    visible_chunks = kb_store.visible_chunks

    async def slow(release=None):  # a store with 100,000 chunks: the build outlasts a turn's time limit
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.5)
        return await visible_chunks(release)

    kb_store.visible_chunks = slow  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(retriever.retrieve("parcel post office label"), 0.1)
    found = await retriever.retrieve("parcel post office label")

    assert found.passages[0].doc_id == "returns.md"
    assert (reads, retriever.builds) == (1, 1), "the second question waited for the first one's build"
