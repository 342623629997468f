"""SOURCE arguments and the pages they yield: folders walked, files read, URLs crawled."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kbindex.config import DEFAULT_MAX_BYTES
from kbindex.crawl import Crawler, CrawlMemory, CrawlOptions, CrawlResult
from kbindex.errors import SkipSource, SourceError, UsageError
from kbindex.extract import extract
from kbindex.fetch import Fetcher, check_scheme
from kbindex.files import read_file, walk
from kbindex.records import Document, Page

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


def is_url(name: str) -> bool:
    """Whether a SOURCE argument or ledger key is a URL (has a scheme, RFC 3986 section 3.1)
    rather than a path."""
    return bool(_SCHEME.match(name))


# Kinds of skip that are a crawl's decisions, never a failure even for the start URL (a soft 404
# is the site saying that the page does not exist, as a 404 would for a page never indexed).
CRAWL_DECISIONS = frozenset({"listing", "duplicate", "noindex", "out_of_scope", "soft_404"})


@dataclass(frozen=True)
class Source:
    """One SOURCE argument: a folder, a file or a URL (a site, a sitemap or a feed).

    For a URL, `crawl` is filled in while its pages are read (see crawl.CrawlResult); after
    `iter_pages` has gone through the source, `complete` says whether every page of it was seen:
    True for files and folders (a folder's unreadable subfolders are excluded from pruning one by
    one, see files.walk), and for a crawl that ended on its own; False for one cut short by
    --max-pages, --max-time, transient errors, a sitemap or feed that could not be read, or an
    unreadable robots.txt.
    """

    kind: str  # "folder" | "file" | "url"
    value: str
    options: CrawlOptions | None = field(default=None, compare=False)
    crawl: CrawlResult | None = field(default=None, compare=False)
    follow_links: bool = False  # a folder: follow symbolic links that lead outside it

    @property
    def complete(self) -> bool:
        return self.crawl is None or bool(self.crawl.complete)

    def explicit(self, name: str, kind: str | None = None) -> bool:
        """Whether a problem with page `name` is a failure of what the user asked for
        (a file named, or the start URL itself), rather than a skip inside a folder or site."""
        if self.kind == "folder":
            return False
        if self.kind == "file":
            return True
        names = self.crawl.start_names if self.crawl else {self.value}
        return (name == self.value or name in names) and kind not in CRAWL_DECISIONS


def parse_sources(args: Sequence[str], options: CrawlOptions | None = None,
                  follow_links: bool = False) -> list[Source]:
    """Classify SOURCE arguments; a missing path or a bad URL scheme is a usage error.

    follow_links: folders follow symbolic links that lead outside them (see files.walk).
    """
    if not args:
        raise UsageError("give at least one SOURCE: a folder, a file or an http(s) URL")
    sources = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.append(Source("folder", str(path.resolve()), follow_links=follow_links))
        elif path.exists():
            sources.append(Source("file", str(path.resolve())))
        elif is_url(arg):
            check_scheme(arg)
            sources.append(Source("url", arg, options or CrawlOptions(), CrawlResult(arg)))
        else:
            raise UsageError(f"no such file or folder: {arg}")
    return sources


def read_url_list(lines: Iterable[str]) -> list[str]:
    """URLs of a --urls file: one a line; blank lines and lines starting with # are ignored."""
    urls = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_url(line):
            raise UsageError(f"--urls line {number} is not a URL: {line[:80]}")
        check_scheme(line)
        urls.append(line)
    return urls


Validators = Callable[[str], tuple[str | None, str | None]]  # url -> (etag, last_modified)


def iter_pages(
    sources: Sequence[Source], fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES,
    validators: Validators | None = None, memory: Callable[[Source], CrawlMemory] | None = None,
    names: Callable[[str], str] | None = None,
) -> Iterator[tuple[Source, str, Page | SourceError]]:
    """Each source's pages (or the error that replaced one), with the root source they came from.

    A URL source is crawled (crawl.Crawler): a site breadth-first within its scope, a sitemap's
    or a feed's entries. `name` is the page's name (crawl.page_name) or the file's path. Once a source is
    exhausted, `source.complete` tells whether all of it was seen. validators gives the ETag and
    Last-Modified seen last time for a URL; pages whose links are not needed (sitemap and feed
    entries, a start URL with --depth 0) are then fetched conditionally (a 304 comes back as a
    Page with status 304 and no body). memory gives each crawl what the last run learned from the
    site's pages (crawl.CrawlMemory), so that those are fetched conditionally too. names gives
    the name an index already keeps a page under (see crawl.Crawler).
    """
    for source in sources:
        if source.kind == "folder":
            for path in walk(Path(source.value), follow_links=source.follow_links):
                if isinstance(path, SourceError):  # an unreadable folder, a link not followed
                    yield source, path.source, path
                else:
                    yield source, str(path), _read(path, max_bytes)
        elif source.kind == "file":
            yield source, source.value, _read(Path(source.value), max_bytes)
        else:
            crawler = Crawler(fetcher, source.options or CrawlOptions(), _agent_token(fetcher),
                              validators=validators, memory=memory(source) if memory else None,
                              names=names)
            result = source.crawl if source.crawl is not None else CrawlResult(source.value)
            for item in crawler.crawl(source.value, result):
                yield source, item.source, item


def collapse(source: Source, name: str, first: str, item: Page | SourceError) -> SkipSource | None:
    """A page already taken this run (as `first`) came again as `name`: a skip to report when it
    is the start page of a URL named on the command line, which would otherwise vanish without
    a word (two sources never collapse into one silently)."""
    if source.kind != "url" or not isinstance(item, Page) or name not in source.crawl.start_names:
        return None
    return SkipSource(source.value, f"same page as {first}, already read from another source",
                      kind="duplicate")


def _agent_token(fetcher: Fetcher) -> str:
    """The product token robots.txt groups are matched against: "kbindex" unless overridden."""
    return (getattr(fetcher, "user_agent", "") or "kbindex").split("/", 1)[0].split()[0] or "kbindex"


def _read(path: Path, max_bytes: int) -> Page | SourceError:
    try:
        return read_file(path, max_bytes)
    except SourceError as exc:
        return exc


def read_document(arg: str, fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """One file or URL through the same read and extract steps as indexing; writes nothing."""
    (source,) = parse_sources([arg])
    if source.kind == "folder":
        raise UsageError(f"give one file or URL, not a folder: {arg}")
    if source.kind == "file":
        page = read_file(Path(source.value), max_bytes)
    else:
        page = fetcher.fetch(source.value)
    return extract(page)
