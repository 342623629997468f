"""What a crawl is asked to do and what it reports: CrawlOptions (limits, scope, robots), CrawlResult
(filled in live, read by progress displays and by the index's prune rule) and CrawlMemory (what an
index keeps of a site's pages between runs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kbindex.config import DEFAULT_CONCURRENCY, DEFAULT_MAX_PAGES
from kbindex.crawl.scope import compile_patterns
from kbindex.errors import UsageError
from kbindex.records import Visit


@dataclass(frozen=True)
class CrawlOptions:
    """How far and how fast one crawl goes. Limits apply per source."""

    scope: str = "path"  # "path": under the start URL's folder; "host": the whole host
    include: tuple[str, ...] = ()  # regular expressions; a URL must match one of them
    exclude: tuple[str, ...] = ()  # regular expressions; a URL matching any is not fetched
    depth: int | None = None  # links followed from the start page; None: no limit
    max_pages: int | None = DEFAULT_MAX_PAGES  # page requests per source
    max_time: float | None = None  # seconds per source
    robots: bool = True  # obey robots.txt (and meta robots)
    concurrency: int = DEFAULT_CONCURRENCY
    allow_private: bool = False  # allow non-public addresses even when the start host is public
    trust_lastmod: bool = False  # a sitemap lastmod not newer than the stored visit: not requested
    render: str = "never"  # JavaScript rendering: "never", "auto" (app shells) or "always"
    # the run's kbindex.render.Renderer (one browser per run); needed unless render is "never"
    renderer: object | None = field(default=None, compare=False)
    on_progress: Callable[[CrawlResult], None] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.scope not in ("path", "host"):
            raise UsageError(f"--scope must be path or host, not {self.scope!r}")
        for name, value in (("--depth", self.depth), ("--max-pages", self.max_pages)):
            if value is not None and value < 0:
                raise UsageError(f"{name} must be 0 or more")
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.render not in ("never", "auto", "always"):
            raise UsageError(f"--render must be never, auto or always, not {self.render!r}")
        if self.render != "never" and self.renderer is None:
            raise UsageError(f"--render {self.render} needs a renderer")
        compile_patterns(self.include, "--include")
        compile_patterns(self.exclude, "--exclude")


@dataclass
class CrawlResult:
    """What one crawl did, filled in while it runs (progress displays read it live).

    `complete` is True once the crawl ran out of pages to fetch on its own: nothing was cut
    short by --max-pages or --max-time, robots.txt could be read, every sitemap it was given
    could be read, and no page failed with a transient error (timeout, connection, 5xx, 429).
    Only then does the set of pages it yielded stand for the whole site, so only then may pages
    missing from it be pruned from an index. `stopped` says why it is not complete
    ("max_pages", "max_time", "errors", "sitemap_failed", "sitemap_limit",
    "robots_unavailable", "start_failed"); None while running and when complete.
    """

    start: str
    kind: str = "site"  # "site" (crawled), "sitemap", "feed" or "page" (a non-HTML start)
    discovered: int = 0  # distinct canonical URLs seen (links, sitemap and feed entries)
    fetched: int = 0  # pages received (HTTP 2xx or 304), robots.txt, sitemaps and feeds not counted
    not_modified: int = 0  # pages known unchanged without a download: answers 304 (also counted in
    #                        fetched) and, with trust_lastmod, pages not requested at all
    queued: int = 0  # in the frontier or being fetched
    errors: int = 0  # pages, sitemaps and feeds that failed
    skipped: Counter = field(default_factory=Counter)  # URLs never requested, by reason
    start_names: set[str] = field(default_factory=set)  # the start page under every name
    complete: bool | None = None
    stopped: str | None = None

    def as_dict(self) -> dict:
        """What `kbindex index --json` reports for the crawl: source, kind, counts, skipped by
        reason, complete and stopped."""
        return {
            "source": self.start, "kind": self.kind, "discovered": self.discovered,
            "fetched": self.fetched, "not_modified": self.not_modified, "errors": self.errors,
            "skipped": dict(self.skipped),
            "complete": bool(self.complete), "stopped": self.stopped,
        }


class CrawlMemory(Protocol):
    """What the crawler keeps between runs (the index keeps it in its ledger).

    Called from the crawl's own thread only, never from the fetch workers.
    """

    def recall(self, url: str) -> Visit | None:
        """The visit recorded for a requested URL (by its url_identity), when its validators may
        be used."""

    def remember(self, visit: Visit) -> None:
        """Record what this run learned from a page (called for every HTML page handled)."""


class Forgetful:
    """A CrawlMemory that keeps nothing: every page is read in full."""

    def recall(self, url: str) -> Visit | None:
        return None

    def remember(self, visit: Visit) -> None:
        pass
