"""The crawl's fetch gate: every request of one crawl goes through here to fetch.Fetcher, with the
crawl's address policy (`allow_private`) decided once, and the page analysis done in the fetch
worker thread."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from kbindex.crawl.analysis import MAX_NESTING, PAGE_TYPES, Analysis, analyze, is_html
from kbindex.crawl.urls import page_name
from kbindex.errors import SkipSource, SourceError
from kbindex.fetch import Fetcher
from kbindex.records import Page, Visit
from kbindex.render import is_app_shell, needs_render_error


class Gate:
    """One crawl's way to the network.

    `allow_private` is fixed for the crawl (--allow-private, or a start host that is itself
    private); `validators(name) -> (etag, last_modified)` gives the last run's validators of
    pages fetched conditionally without a stored visit; `names(name) -> name` the name an index
    already keeps a page under. Fetch errors are fetch.Fetcher's: FetchError, SkipSource.
    """

    def __init__(self, fetcher: Fetcher, allow_private: bool,
                 validators: Callable[[str], tuple[str | None, str | None]],
                 names: Callable[[str], str], render: str = "never", renderer=None,
                 subresource_policy: Callable[[str], str | None] | None = None):
        self.fetcher = fetcher
        self.allow_private = allow_private
        self.validators = validators
        self.names = names
        self.render = render  # "never", "auto" or "always" (kbindex.render)
        self.renderer = renderer  # a kbindex.render.Renderer unless render is "never"
        # why the browser may not request a URL (None: it may, through the fetcher)
        self.subresource_policy = subresource_policy or (lambda url: None)

    def rendered(self, source: str, page: Page) -> Page:
        """The HTML page as a browser builds it, where --render asks for that; else `page`.

        Raises SourceError(kind="needs_render") for an app shell with --render never, and
        kind="render" when the browser fails.
        """
        if self.render == "always" or (self.render == "auto" and is_app_shell(page.body)):
            refusal = self.subresource_policy
            return self.renderer.render(page, refusal, self.allow_private)
        if self.render == "never" and is_app_shell(page.body):
            raise needs_render_error(source, self.render)
        return page

    def name(self, url: str) -> str:
        """The name a page at this URL is handed on under: its page_name, or the index's own."""
        return self.names(page_name(url) or url)

    def refuses(self, url: str) -> bool:
        """Whether `url`'s host resolves to a non-public address the crawl may not reach."""
        return not self.allow_private and self.fetcher.is_private_host(url)

    def get(self, url: str, accept: tuple[str, ...] = PAGE_TYPES, etag: str | None = None,
            last_modified: str | None = None) -> Page:
        """fetch.Fetcher.fetch under the crawl's address policy; raises what it raises."""
        return self.fetcher.fetch(url, accept=accept, allow_private=self.allow_private,
                                  etag=etag, last_modified=last_modified)

    def page(self, url: str, conditional: bool = False,
             visit: Visit | None = None) -> tuple[Page, Analysis | None]:
        """Runs in a worker thread: download and parse; (page, None) for a 304.

        Conditional with the visit's validators when there is one (a page whose links are
        followed), else with `validators` when `conditional` (a sitemap or feed entry). Raises
        SkipSource for a page that is not HTML or nests deeper than MAX_NESTING, and the
        fetcher's errors.
        """
        if visit is not None:
            etag, modified = visit.etag, visit.last_modified
        else:
            etag, modified = self.validators(self.name(url)) if conditional else (None, None)
        page = self.get(url, etag=etag, last_modified=modified)
        if page.status == 304:
            return page, None
        if not is_html(page):
            media = (page.content_type or "").split(";")[0].strip().lower() or "none"
            raise SkipSource(url, f"not an HTML page (Content-Type {media})", kind="not_html")
        page = self.rendered(url, page)
        analysis = analyze(page, page.url or url)
        if analysis.nesting > MAX_NESTING:
            raise SkipSource(url, f"markup nested more than {MAX_NESTING} elements deep", kind="too_deep")
        return page, analysis

    def now(self, url: str, visit: Visit | None = None) -> Future:
        """A fetch in this thread (unconditional without a visit), as a finished future."""
        future: Future = Future()
        try:
            future.set_result(self.page(url, visit=visit))
        except SourceError as exc:
            future.set_exception(exc)
        return future
