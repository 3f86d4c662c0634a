"""A help-center website, crawled politely: by its sitemap.xml, or from a start URL by links.

Rules: only the start URL's host; robots.txt is obeyed for this crawler's user agent (its
Crawl-delay too), and a robots.txt that cannot be read (server error, timeout) stops the crawl
rather than being taken as permission; one request at a time, at most `rate` per second; at
most `max_pages` pages; each request with a timeout and retried with backoff on network errors,
429 and 5xx. `doc_id` is the page's canonical URL (its `<link rel=canonical>` on the same host,
else the fetched URL without fragment).
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.knowledge.sources.base import BadContent, SourceError, SourceItem, check_text, make_document
from connectors.knowledge.sources.html_text import html_to_text
from connectors.knowledge.sources.pdf_text import pdf_to_text
from schemas.knowledge import KnowledgeDocument

__all__ = ["CrawlSettings", "WebsiteSource", "canonical_url"]

USER_AGENT = "supportflow-kb/0.1"
_NOT_PAGES = re.compile(
    r"\.(png|jpe?g|gif|svg|webp|ico|css|js|map|woff2?|ttf|zip|gz|tgz|mp4|mp3|avi|mov|exe|dmg|xml|json)$", re.I
)


@dataclass(frozen=True)
class CrawlSettings:
    max_pages: int = 200
    rate: float = 2.0  # requests per second, the whole crawl
    timeout_s: float = 10.0
    attempts: int = 3
    max_bytes: int = 5 * 1024 * 1024  # per response
    user_agent: str = USER_AGENT


class _Retryable(Exception):
    """A response worth asking again for (429, 5xx)."""


class _Refused(Exception):
    """A response that is not a page to index; the message says why."""


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, no default port, no fragment, `/` for an empty path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


class WebsiteSource:
    """Pages of one site; `start` is a page URL (crawl by links) or a sitemap URL (`.xml`)."""

    def __init__(self, start: str, domain: str = "general", settings: CrawlSettings | None = None) -> None:
        parts = urlsplit(start)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a website source is an http(s) URL, not {start!r}")
        self.start = canonical_url(start)
        self.domain = domain
        self.settings = settings or CrawlSettings()
        self.host = urlsplit(self.start).netloc
        self._complete = False
        self._next_request = 0.0
        self._interval = 1.0 / max(self.settings.rate, 0.001)
        self.fetched: list[str] = []  # every URL requested, in order (robots.txt included)

    @property
    def name(self) -> str:
        return f"site:{self.start}"

    @property
    def complete(self) -> bool:
        return self._complete

    def estimate(self) -> int | None:
        return None

    async def documents(self) -> AsyncIterator[SourceItem]:
        self._complete = False
        headers = {"User-Agent": self.settings.user_agent}
        timeout = httpx.Timeout(self.settings.timeout_s)
        async with httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=True) as client:
            robots = await self._robots(client)
            if isinstance(robots, SourceError):
                yield robots
                return
            errors = 0
            seen_ids: set[str] = set()
            if urlsplit(self.start).path.lower().endswith(".xml"):
                pages, sitemap_errors = await self._sitemap(client, robots, self.start)
                for error in sitemap_errors:
                    errors += 1
                    yield error
                queue = deque(pages)
                follow_links = False
            else:
                queue = deque([self.start])
                follow_links = True
            queued = set(queue)
            visited = 0
            while queue:
                if visited >= self.settings.max_pages:
                    errors += 1  # cut short: pages beyond the limit must not count as deleted
                    yield SourceError(self.start, f"stopped at --max-pages {self.settings.max_pages}")
                    break
                url = queue.popleft()
                if not robots.can_fetch(self.settings.user_agent, url):
                    continue
                visited += 1
                try:
                    final_url, content_type, data = await self._fetch(client, url)
                    document, links = self._page(url, final_url, content_type, data)
                except (_Refused, BadContent) as exc:
                    errors += 1
                    yield SourceError(url, str(exc), doc_id=url)
                    continue
                except (httpx.HTTPError, _Retryable) as exc:
                    errors += 1
                    yield SourceError(url, f"fetch failed: {exc or type(exc).__name__}", doc_id=url)
                    continue
                if follow_links:
                    for link in links:
                        if link not in queued:
                            queued.add(link)
                            queue.append(link)
                if document.doc_id in seen_ids:
                    continue  # another URL of a page already read (its canonical says so)
                seen_ids.add(document.doc_id)
                yield document
            self._complete = errors == 0

    async def _robots(self, client: httpx.AsyncClient) -> RobotFileParser | SourceError:
        url = urlunsplit((urlsplit(self.start).scheme, self.host, "/robots.txt", "", ""))
        parser = RobotFileParser(url)
        try:
            _, _, data = await self._fetch(client, url)
        except _Refused:  # 4xx: no robots.txt, everything is allowed (RFC 9309)
            parser.parse([])
            return parser
        except (httpx.HTTPError, _Retryable) as exc:
            return SourceError(url, f"robots.txt could not be read ({exc or type(exc).__name__}); not crawling")
        parser.parse(data.decode("utf-8", errors="replace").splitlines())
        delay = parser.crawl_delay(self.settings.user_agent)
        if delay:
            self._interval = max(self._interval, float(delay))
        return parser

    async def _sitemap(
        self, client: httpx.AsyncClient, robots: RobotFileParser, url: str, depth: int = 0
    ) -> tuple[list[str], list[SourceError]]:
        """The page URLs of a sitemap (a sitemap index is followed two levels deep)."""
        try:
            _, _, data = await self._fetch(client, url)
            if b"<!DOCTYPE" in data[:2048].upper() or b"<!ENTITY" in data.upper():
                raise BadContent("a sitemap with a DOCTYPE or entities is refused (entity expansion)")
            root = ET.fromstring(data)
        except (httpx.HTTPError, _Retryable, _Refused, BadContent) as exc:
            return [], [SourceError(url, f"sitemap: {exc or type(exc).__name__}")]
        except ET.ParseError as exc:
            return [], [SourceError(url, f"sitemap is not valid XML: {exc}")]
        locations = [(element.text or "").strip() for element in root.iter() if element.tag.rsplit("}", 1)[-1] == "loc"]
        pages: list[str] = []
        errors: list[SourceError] = []
        if root.tag.rsplit("}", 1)[-1] == "sitemapindex":
            if depth >= 2:
                return [], [SourceError(url, "sitemap indexes nested too deeply")]
            for location in locations:
                if self._same_host(location):
                    more, failed = await self._sitemap(client, robots, canonical_url(location), depth + 1)
                    pages += more
                    errors += failed
            return pages, errors
        return [canonical_url(loc) for loc in locations if loc and self._same_host(loc)], errors

    def _same_host(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and canonical_url(url).split("/")[2] == self.host

    async def _pace(self) -> None:
        """One request start per interval, whatever else runs."""
        now = time.monotonic()
        wait = self._next_request - now
        self._next_request = max(now, self._next_request) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> tuple[str, str, bytes]:
        """(the URL after redirects, its content type, its body), retried on transient failures."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception(lambda e: isinstance(e, (httpx.TransportError, _Retryable))),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._pace()
                self.fetched.append(url)
                async with client.stream("GET", url) as response:
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        raise _Refused(f"HTTP {response.status_code}")
                    final = canonical_url(str(response.url))
                    if not self._same_host(final):
                        raise _Refused(f"redirected to another host ({final})")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > self.settings.max_bytes:
                        raise _Refused(
                            f"{declared / 1e6:.1f} MB, over the limit of {self.settings.max_bytes / 1e6:.1f} MB"
                        )
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > self.settings.max_bytes:
                            raise _Refused(f"over the limit of {self.settings.max_bytes / 1e6:.1f} MB")
                    return final, response.headers.get("content-type", ""), bytes(body)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _page(self, url: str, final_url: str, content_type: str, data: bytes) -> tuple[KnowledgeDocument, list[str]]:
        kind = content_type.split(";")[0].strip().lower()
        path = urlsplit(final_url).path
        segments = [s for s in path.split("/") if s]
        section = segments[-2].replace("-", " ") if len(segments) >= 2 else None
        if kind == "application/pdf":
            title, text = pdf_to_text(data)
            document = make_document(
                doc_id=final_url,
                title=title or (segments[-1] if segments else self.host),
                body=text,
                url=final_url,
                section=section,
                domain=self.domain,
                source=self.name,
            )
            return document, []
        if kind not in ("text/html", "application/xhtml+xml"):
            raise _Refused(f"not a page ({kind or 'no content type'})")
        charset = re.search(r"charset=([\w-]+)", content_type)
        try:
            text = data.decode(charset.group(1) if charset else "utf-8")
        except (LookupError, UnicodeDecodeError):
            raise BadContent(f"not valid {charset.group(1) if charset else 'UTF-8'} text") from None
        page = html_to_text(check_text(text))
        doc_id = final_url
        if page.canonical:
            canonical = canonical_url(urljoin(final_url, page.canonical))
            if self._same_host(canonical):
                doc_id = canonical
        links = []
        for href in page.links:
            link = canonical_url(urljoin(final_url, href))
            if self._same_host(link) and not _NOT_PAGES.search(urlsplit(link).path):
                links.append(link)
        document = make_document(
            doc_id=doc_id,
            title=page.title or (segments[-1] if segments else self.host),
            body=page.text,
            url=doc_id,
            section=section,
            domain=self.domain,
            language=page.language,
            source=self.name,
        )
        return document, links
