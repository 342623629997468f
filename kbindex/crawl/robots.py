"""robots.txt (RFC 9309, the Robots Exclusion Protocol): each host's rules read once per crawl
through the fetch gate, with Protego (Scrapy's parser), and its Crawl-delay and Sitemap lines."""

from __future__ import annotations

from urllib.parse import urlsplit

from kbindex.config import MAX_CRAWL_DELAY
from kbindex.errors import FetchError, SkipSource
from kbindex.fetch import host_key

# The rules of a robots.txt that answered 5xx, 429 or not at all: RFC 9309, 2.3.1.3 and 2.3.1.4
# say to assume a complete disallow.
DISALLOW_ALL = object()


class Robots:
    """The robots.txt rules of the hosts one crawl visits, each read once.

    `gate` is the crawl's fetch gate (crawl.gate.Gate: address checks, limits, delays apply);
    `token` the product token matched against User-agent lines; with `obey` False every URL is
    allowed and robots.txt is never read for that. A robots.txt that cannot be read sets
    `result.stopped` to "robots_unavailable" (the crawl's CrawlResult: it is then incomplete) and
    `error` to its FetchError.
    """

    def __init__(self, gate, token: str, result, obey: bool = True):
        self.gate = gate
        self.token = token
        self.result = result
        self.obey = obey
        self.error: FetchError | None = None
        self._rules: dict[tuple[str, str], object] = {}  # (scheme, host) -> Protego, None or DISALLOW_ALL

    def rules(self, url: str):
        """The host's rules: a Protego parser, None (no rules: everything allowed) or
        DISALLOW_ALL. Sets a host's Crawl-delay (at most MAX_CRAWL_DELAY seconds) on the fetcher's
        throttle."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key in self._rules:
            return self._rules[key]
        from protego import Protego

        robots_url = f"{parts.scheme}://{parts.netloc}/robots.txt"
        rules = None
        try:
            page = self.gate.get(robots_url, accept=())
            rules = Protego.parse(page.body.decode("utf-8", "replace"))
            delay = rules.crawl_delay(self.token)
            if delay:
                self.gate.fetcher.throttle.set_delay(host_key(url), min(float(delay), MAX_CRAWL_DELAY))
        except FetchError as exc:
            # 4xx: there are no rules, everything is allowed. 5xx, timeouts, refused
            # connections: the site cannot say, so nothing is fetched (RFC 9309, 2.3.1).
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                rules = DISALLOW_ALL
                self.result.stopped = "robots_unavailable"
                self.error = exc
        except SkipSource:
            rules = None  # a robots.txt too large or of a strange type: no usable rules
        self._rules[key] = rules
        return rules

    def allowed(self, url: str) -> bool:
        """Whether the crawl may fetch `url` (always, when robots.txt is not obeyed)."""
        if not self.obey:
            return True
        rules = self.rules(url)
        if rules is None:
            return True
        if rules is DISALLOW_ALL:
            return False
        return rules.can_fetch(url, self.token)

    def sitemaps(self, url: str) -> list[str]:
        """The Sitemap lines of the robots.txt of `url`'s host (none where it has no rules)."""
        rules = self.rules(url)
        if rules is None or rules is DISALLOW_ALL:
            return []
        return list(rules.sitemaps)
