"""Summary: the counts and lists an index run (or a dry run, or a rebuild) reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from kbindex.crawl import CrawlResult


@dataclass
class Summary:
    """What an index run did.

    `skipped` counts everything deliberately not indexed: pages and files skipped after reading
    them (listed in `skips`) plus URLs a crawl never requested (out of scope, robots.txt, depth,
    traps; counted in `skipped_by` only). `skipped_by` and `failed_by` count by reason kind.
    """

    sources: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0  # sources removed because they are gone (listed in `prunes`)
    chunks_added: int = 0  # chunks written to the store
    chunks_embedded: int = 0  # of those, how many needed the model (the rest came from the cache)
    chunks_deleted: int = 0
    discovered: int = 0  # distinct URLs crawls found
    fetched: int = 0  # pages crawls received
    not_modified: int = 0  # pages known unchanged without a download (304, or sitemap lastmod)
    failures: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    prunes: list[dict] = field(default_factory=list)
    crawl_skipped: Counter = field(default_factory=Counter)
    crawls: list[dict] = field(default_factory=list)

    def add_crawl(self, result: CrawlResult) -> None:
        """Fold one crawl's counts of URLs it never requested into the summary."""
        self.discovered += result.discovered
        self.fetched += result.fetched
        self.not_modified += result.not_modified
        self.crawl_skipped.update(result.skipped)
        self.skipped += sum(result.skipped.values())
        self.crawls.append(result.as_dict())

    def merge(self, other: Summary) -> Summary:
        """The sum of two runs' summaries (one `index` over several configured sources)."""
        merged = Summary()
        for f in fields(Summary):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(merged, f.name, a + b)
        return merged

    def as_dict(self) -> dict:
        skipped_by = Counter(s["kind"] for s in self.skips) + self.crawl_skipped
        return {
            "sources": self.sources,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "pruned": self.pruned,
            "chunks_added": self.chunks_added,
            "chunks_embedded": self.chunks_embedded,
            "chunks_deleted": self.chunks_deleted,
            "discovered": self.discovered,
            "fetched": self.fetched,
            "not_modified": self.not_modified,
            "skipped_by": dict(sorted(skipped_by.items())),
            "failed_by": dict(sorted(Counter(f["kind"] for f in self.failures).items())),
            "crawls": self.crawls,
            "failures": self.failures,
            "skips": self.skips,
            "prunes": self.prunes,
        }
