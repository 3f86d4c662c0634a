"""A folder of every kind of file, ingested and found by what each says."""

from __future__ import annotations

from connectors.knowledge.sources.folder import FolderSource
from connectors.knowledge.sources.html_text import html_to_text
from pipelines.knowledge.ingest import default_chunker, ingest
from tests.support.knowledge import minimal_pdf, write_files

PAGE = """<!doctype html><html lang="en"><head><title>Loyalty | Example Shop</title>
<style>.x { color: red }</style><script>track()</script></head>
<body><nav><a href="/">Home</a> Sitewide menu</nav>
<main><h1>Loyalty points</h1><p>You earn one point for every euro you spend.</p>
<h2>Tiers</h2><ul><li>Silver from 500 points</li><li>Gold from 2000 points</li></ul>
<table><tr><th>Tier</th><th>Discount</th></tr><tr><td>Silver</td><td>5%</td></tr><tr><td>Gold</td><td>10%</td></tr></table>
</main><footer>Copyright</footer></body></html>"""


def test_html_keeps_headings_lists_and_tables_and_drops_the_page_furniture():
    page = html_to_text(PAGE)
    assert page.title == "Loyalty points" and page.language == "en"
    assert "# Loyalty points" in page.text and "## Tiers" in page.text
    assert "- Silver from 500 points\n- Gold from 2000 points" in page.text
    assert "| Tier | Discount |\n| --- | --- |\n| Silver | 5% |" in page.text
    for furniture in ("Sitewide menu", "Copyright", "track()", "color: red"):
        assert furniture not in page.text


async def test_every_kind_of_file_is_found_by_what_it_says(kb_store, embedder, tmp_path):
    root = write_files(
        tmp_path / "kb",
        {
            "rewards/loyalty.html": PAGE,
            "store-hours.txt": "Our shops open from nine in the morning to six in the evening, Monday to Saturday.",
            "manuals/kettle.pdf": minimal_pdf("Descale the kettle every month with white vinegar."),
            "gift-cards.md": "---\ntitle: Gift cards\ndomain: sales\n---\nGift cards never expire.\n",
            # the writers' notes and a data file: neither an article nor an error
            "README.md": "# How to write articles\n\nKeep them short.",
            "intents.yaml": "refund: refunds/refund.md\n",
        },
    )
    report = await ingest(FolderSource(root, domain="support"), "support", embedder, default_chunker, kb_store)
    assert not report.skipped and len(report.added) == 4 and "README.md" not in report.added
    assert sorted(report.new_releases) == ["sales@1", "support@1"]

    async def top(query: str) -> str:
        (vector,) = embedder.embed_queries([query])
        return (await kb_store.dense_search(embedder.model_id, vector, 1))[0].doc_id

    assert await top("how many points for gold status") == "rewards/loyalty.html"
    assert await top("when are your stores open on saturday") == "store-hours.txt"
    assert await top("how do I clean limescale from my kettle") == "manuals/kettle.pdf"
    assert (await kb_store.lexical_search("", "vinegar", 1))[0].doc_id == "manuals/kettle.pdf"
    loyalty = await kb_store.get_document("rewards/loyalty.html")
    assert (loyalty.title, loyalty.section, loyalty.domain) == ("Loyalty points", "rewards", "support")
    assert (await kb_store.get_document("gift-cards.md")).domain == "sales"
