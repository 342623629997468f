"""URL identity: the URL requested for a link, the name a page is stored under, and the identity
pages are de-duplicated by. Built on w3lib (Scrapy's URL library), which follows the WHATWG URL
standard for escaping and RFC 3986 for normalization.

Three forms, each derived from the one before:

- `request_url`: the link as found, made safe to send (str -> str | None);
- `page_name`: the request URL without what never chooses the page (user info, default port,
  tracking and session parameters): still a URL that fetches the page;
- `url_identity`: the page name canonicalized (query sorted, escapes normalized): never requested.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

# Parameters that never choose the page: left out of a page's name and identity, never out of the
# request. Tracking parameters, and the session parameters of platforms that name them so (Java,
# PHP, ASP, ColdFusion). Ambiguous names (`sid`, `id`, `s`, `token`) are kept: `sid` is an article
# number on PHP-Nuke sites; session tokens under other names are found by their pages' text
# (`TokenWatch`).
IGNORED_PARAM = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga|_gl|"
    r"_hsenc|_hsmi|mkt_tok|ref_src|jsessionid|phpsessid|aspsessionid\w*|cfid|cftoken)$",
    re.IGNORECASE,
)
_PATH_SESSION = re.compile(r";(jsessionid|phpsessid)=[^/?#;]*", re.IGNORECASE)
_BAD_HOST = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=1 << 16)  # a site repeats its navigation links on every page
def request_url(url: str, base: str | None = None) -> str | None:
    """The URL to request for a link as found: joined to `base`, the fragment removed, unsafe
    characters percent-encoded and an international host name in punycode (w3lib's
    `safe_url_string`, after the WHATWG URL standard), nothing else changed; None for schemes
    other than http(s) and malformed URLs. Idempotent.

    The query string above all is sent as written: applications route on it (`index.php?/kb/x`,
    `?name=News&sid=12`), so reordering or dropping parameters can lead to pages that do not exist.
    """
    url = url.strip()
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    # The fragment is never sent: cut first, so that all anchors of a page are one cache entry.
    url = url.partition("#")[0]
    found = _REQUESTED.get(url, _MISSING)
    if found is _MISSING:
        # safe_url_string is pure Python: cached without the fragment (links to the anchors of
        # one page), the result too (it is its own request URL, so page_name does not pay again).
        found = _request_url(url)
        if len(_REQUESTED) > MAX_CACHED_URLS:
            _REQUESTED.clear()
        _REQUESTED[url] = found
        if found is not None:
            _REQUESTED[found] = found
    return found


_MISSING = object()
MAX_CACHED_URLS = 1 << 16
_REQUESTED: dict[str, str | None] = {}


def _request_url(url: str) -> str | None:
    from w3lib.url import safe_url_string

    try:
        parts = urlsplit(url)
        if (parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or _BAD_HOST.search(parts.hostname)):
            return None
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
        return safe_url_string(url)
    except ValueError:  # a bad port, IPv6 literal or host name (UnicodeError is a ValueError)
        return None


@functools.lru_cache(maxsize=1 << 16)
def page_name(url: str) -> str | None:
    """The name a page is stored and shown under: its request URL without user info, default
    port, trailing fragment and IGNORED_PARAM parameters (query order kept), so the name is still
    a URL that fetches the page. None where request_url is None."""
    url = request_url(url)
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if (parts.scheme, parts.port) in (("http", 80), ("https", 443)):
        host = host.rpartition(":")[0]
    path = _PATH_SESSION.sub("", parts.path) or "/"
    url = urlunsplit((parts.scheme, host, path, parts.query, ""))
    ignored = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if IGNORED_PARAM.match(k)}
    if ignored:
        from w3lib.url import url_query_cleaner

        # unique=False: a repeated parameter (?tag=a&tag=b) is data, not a duplicate
        url = url_query_cleaner(url, ignored, remove=True, unique=False)
    return url


@functools.lru_cache(maxsize=1 << 16)
def url_identity(url: str, base: str | None = None) -> str | None:
    """A page's identity, for de-duplication only (never requested): w3lib's `canonicalize_url`
    of its page_name, which sorts query parameters, normalizes percent-encoding, resolves dot
    segments (also percent-encoded ones) and lower-cases the host. None for non-http(s) URLs."""
    from w3lib.url import canonicalize_url

    name = page_name(url) if base is None else page_name(request_url(url, base) or "")
    return None if name is None else canonicalize_url(name, keep_blank_values=True)


def url_pattern(url: str) -> str:
    """Host and path with digit runs folded: pages of one calendar or pagination share it."""
    parts = urlsplit(url)
    return parts.netloc + re.sub(r"\d+", "N", parts.path)

