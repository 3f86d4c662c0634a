"""The demo shop's help center (`playbooks/help_center/`) parses and answers every templated intent.

Each article is `<section>/<slug>.md` with YAML front matter (title, section, url, domain,
updated_at, language) between two `---` lines; the knowledge ingest and the retrieval evaluation
both rely on that shape, and on the path being the article's id. `intents.yaml` names the article
that answers each intent of `operators/data/replies.yaml`, so replacing the templates with retrieved
answers leaves no intent without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELP_CENTER = ROOT / "playbooks" / "help_center"
REPLIES = ROOT / "operators" / "data" / "replies.yaml"

FIELDS = {"title", "section", "url", "domain", "updated_at", "language"}
DOMAINS = {"support", "logistics", "billing", "legal", "product"}
SITE = "https://help.example-shop.com"
MIN_ARTICLES = 40
MIN_WORDS, MAX_WORDS = 150, 600
_LINK = re.compile(r"\]\((" + re.escape(SITE) + r"/[^)\s]*)\)")


@dataclass(frozen=True)
class Article:
    path: Path
    meta: dict[str, Any]
    body: str

    @property
    def doc_id(self) -> str:
        return self.path.relative_to(HELP_CENTER).with_suffix("").as_posix()


def parse(path: Path) -> Article:
    """Front matter between the first two `---` lines, then the Markdown body."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0] == "---", f"{path}: no front matter"
    end = lines.index("---", 1)
    meta = yaml.safe_load("\n".join(lines[1:end]))
    assert isinstance(meta, dict), f"{path}: front matter is not a mapping"
    return Article(path, meta, "\n".join(lines[end + 1 :]))


def article_paths() -> list[Path]:
    # one level of section folders; README.md and intents.yaml at the top are not articles
    return sorted(HELP_CENTER.glob("*/*.md"))


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return [parse(path) for path in article_paths()]


def test_the_help_center_has_at_least_40_articles(articles):
    assert len(articles) >= MIN_ARTICLES
    assert not list(HELP_CENTER.glob("*/*/*.md")), "sections are one folder deep"


@pytest.mark.parametrize("path", article_paths(), ids=lambda p: p.relative_to(HELP_CENTER).as_posix())
def test_front_matter_has_exactly_the_fields_and_they_agree_with_the_path(path: Path):
    article = parse(path)
    meta = article.meta
    assert set(meta) == FIELDS
    section, slug = path.parent.name, path.stem
    assert meta["section"] == section
    assert meta["url"] == f"{SITE}/{section}/{slug}"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug), "slugs are lower-case words joined by hyphens"
    assert meta["domain"] in DOMAINS
    assert isinstance(meta["updated_at"], date), "updated_at is an ISO date (YYYY-MM-DD)"
    assert meta["language"] == "en"
    assert isinstance(meta["title"], str) and meta["title"].strip() == meta["title"] != ""


@pytest.mark.parametrize("path", article_paths(), ids=lambda p: p.relative_to(HELP_CENTER).as_posix())
def test_body_is_a_help_article_of_150_to_600_words_with_an_intro_and_headings(path: Path):
    body = parse(path).body
    words = len(re.findall(r"\w+", body))
    assert MIN_WORDS <= words <= MAX_WORDS, words
    first = next(line for line in body.splitlines() if line.strip())
    assert not first.startswith(("#", "|", "-", "1.")), "the article opens with an intro paragraph"
    assert re.search(r"^## \S", body, re.MULTILINE), "sub-questions get ## headings"
    assert not re.search(r"^# ", body, re.MULTILINE), "the title is in the front matter, not a # heading"


def test_no_two_articles_share_a_title(articles):
    titles = [a.meta["title"].casefold() for a in articles]
    assert [t for t in set(titles) if titles.count(t) > 1] == []


def test_at_least_six_articles_hold_a_table(articles):
    with_table = [a for a in articles if re.search(r"^\|.*\|\s*\n\|[-| :]+\|\s*$", a.body, re.MULTILINE)]
    assert len(with_table) >= 6


def test_every_link_into_the_help_center_names_an_existing_article(articles):
    known = {a.meta["url"] for a in articles}
    broken = [(a.doc_id, url) for a in articles for url in _LINK.findall(a.body) if url not in known]
    assert broken == []


def test_every_reply_intent_is_answered_by_an_existing_article_or_is_a_fallback():
    replies = set(yaml.safe_load(REPLIES.read_text(encoding="utf-8")))
    mapping = yaml.safe_load((HELP_CENTER / "intents.yaml").read_text(encoding="utf-8"))
    intents: dict[str, str] = mapping["intents"]
    fallbacks = set(mapping["fallbacks"])
    assert replies - set(intents) - fallbacks == set(), "an intent of replies.yaml has no article"
    assert set(intents) - replies == set(), "intents.yaml names an intent replies.yaml does not have"
    assert fallbacks <= replies and not fallbacks & set(intents)
    existing = {path.relative_to(HELP_CENTER).with_suffix("").as_posix() for path in article_paths()}
    assert {intent: target for intent, target in intents.items() if target not in existing} == {}
