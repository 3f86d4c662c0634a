"""A website crawled through a local HTTP server this test starts: robots.txt obeyed, the sitemap
read, one host only, transient errors retried, the rate limit kept; pages found by search."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.knowledge.sources.website import CrawlSettings, WebsiteSource
from pipelines.knowledge.ingest import default_chunker, ingest


def page(title: str, body: str, canonical: str | None = None) -> str:
    link = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    return (
        f"<html lang='en'><head><title>{title} - Example Help</title>{link}</head><body>"
        f"<nav><a href='/help/'>Help home</a></nav><article><h1>{title}</h1>{body}</article></body></html>"
    )


@dataclass
class Site:
    url: str
    requests: list[tuple[float, str]] = field(default_factory=list)
    flaky_left: int = 1

    def paths(self) -> list[str]:
        return [path for _, path in self.requests]


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site(url="")
    pages = {
        "/robots.txt": ("text/plain", "User-agent: *\nDisallow: /private/\n"),
        "/help/": (
            "text/html",
            page(
                "Help center",
                "<p>Browse our articles.</p><ul>"
                "<li><a href='/help/refunds?utm_source=home#top'>Refunds</a></li>"
                "<li><a href='shipping'>Shipping</a></li>"
                "<li><a href='/private/staff-notes'>Staff</a></li>"
                "<li><a href='http://elsewhere.invalid/page'>Partner</a></li>"
                "<li><a href='/help/flaky'>Flaky</a></li>"
                "<li><a href='/logo.png'>Logo</a></li></ul>",
            ),
        ),
        "/help/refunds": (
            "text/html",
            page("Refunds", "<p>Refunds reach your card within five working days.</p>", canonical="/help/refunds"),
        ),
        "/help/shipping": ("text/html", page("Shipping", "<p>We ship to every country in the European Union.</p>")),
        "/help/flaky": ("text/html", page("Gift wrapping", "<p>Gift wrapping costs two euros per parcel.</p>")),
        "/private/staff-notes": ("text/html", page("Staff only", "<p>The discount code is STAFF50.</p>")),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((time.monotonic(), self.path))
            path = self.path.split("?")[0]
            if path == "/sitemap.xml":
                base = state.url
                locs = "".join(
                    f"<url><loc>{base}{p}</loc></url>"
                    for p in ("/help/refunds", "/help/shipping", "/private/staff-notes")
                )
                self._send(
                    200,
                    "application/xml",
                    f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>',
                )
                return
            if path == "/help/flaky" and state.flaky_left > 0:
                state.flaky_left -= 1
                self._send(503, "text/plain", "try again")
                return
            if path in pages:
                self._send(200, *pages[path])
                return
            self._send(404, "text/plain", "not found")

        def _send(self, status: int, kind: str, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def test_a_crawl_follows_links_on_one_host_and_never_fetches_what_robots_forbids(site, kb_store, embedder):
    source = WebsiteSource(f"{site.url}/help/", domain="support", settings=CrawlSettings(rate=50))
    report = await ingest(source, "support", embedder, default_chunker, kb_store)

    assert not any(path.startswith("/private/") for path in site.paths())
    assert "/logo.png" not in site.paths() and site.paths()[0] == "/robots.txt"
    assert sorted(report.added) == [
        f"{site.url}/help/",
        f"{site.url}/help/flaky",
        f"{site.url}/help/refunds",  # the canonical URL, not the tracked link
        f"{site.url}/help/shipping",
    ]
    assert site.paths().count("/help/flaky") == 2  # a 503, then retried
    assert report.complete and not report.skipped

    (vector,) = embedder.embed_queries(["how long until my money is back on my card"])
    (best,) = await kb_store.dense_search(embedder.model_id, vector, 1)
    assert (best.doc_id, best.title, best.url) == (f"{site.url}/help/refunds", "Refunds", f"{site.url}/help/refunds")
    assert await kb_store.lexical_search("", "STAFF50", 5) == []
    assert (await kb_store.lexical_search("", "wrapping", 1))[0].doc_id == f"{site.url}/help/flaky"


async def test_a_sitemap_lists_the_pages_and_robots_still_rules(site, kb_store, embedder):
    source = WebsiteSource(f"{site.url}/sitemap.xml", settings=CrawlSettings(rate=50))
    report = await ingest(source, None, embedder, default_chunker, kb_store)

    assert sorted(report.added) == [f"{site.url}/help/refunds", f"{site.url}/help/shipping"]
    assert "/private/staff-notes" not in site.paths()
    assert (await kb_store.lexical_search("", "European Union", 1))[0].section == "help"


async def test_the_crawl_keeps_to_its_rate(site):
    source = WebsiteSource(f"{site.url}/sitemap.xml", settings=CrawlSettings(rate=5))
    items = [item async for item in source.documents()]
    assert len(items) == 2
    times = [at for at, _ in site.requests]  # robots, sitemap, two pages: four requests at 5/s
    assert len(times) == 4 and times[-1] - times[0] >= 3 * 0.2 * 0.9


async def test_a_crawl_cut_short_by_its_page_limit_deletes_nothing(site):
    source = WebsiteSource(f"{site.url}/help/", settings=CrawlSettings(rate=50, max_pages=2))
    items = [item async for item in source.documents()]
    assert not source.complete
    assert any("stopped at --max-pages 2" in str(item) for item in items)
