"""The only module that talks HTTP: limits, redirects, and a clear error for every failure."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from kbindex.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT, USER_AGENT
from kbindex.errors import FetchError, SkipSource, UsageError
from kbindex.records import Page

ALLOWED_SCHEMES = ("http", "https")
TEXT_TYPES = (
    "text/html", "application/xhtml+xml", "text/plain", "text/markdown", "text/x-markdown",
    "text/x-rst",
)


def check_scheme(url: str) -> None:
    """Refuse anything but http(s) URLs with a host."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UsageError(
            f"unsupported URL scheme {parts.scheme + ':' if parts.scheme else ''!r} in {url}: "
            "only http and https URLs can be indexed"
        )
    if not parts.hostname:
        raise UsageError(f"URL has no host: {url}")


class Fetcher:
    """Fetches single URLs with a timeout, a decompressed-size cap and a redirect limit."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        user_agent: str = USER_AGENT,
        check_url: Callable[[str], None] | None = None,
    ):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.check_url = check_url  # called on every URL, redirect hops included
        self._client = httpx.Client(
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # followed by hand so each hop is checked
            trust_env=False,  # never route through a proxy from the environment
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fetch(self, url: str, *, accept: tuple[str, ...] = TEXT_TYPES, etag: str | None = None,
              last_modified: str | None = None) -> Page:
        """GET a URL, following redirects; raise FetchError or SkipSource on failure.

        With etag / last_modified (from an earlier fetch) the request is conditional: a server
        that answers 304 Not Modified yields a Page with status 304 and an empty body.
        """
        conditional = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        seen = [url]
        current = url
        deadline = time.monotonic() + self.timeout * 3
        for _ in range(self.max_redirects + 1):
            check_scheme(current)
            if self.check_url:
                self.check_url(current)
            response = self._get(url, current, deadline, accept, conditional)
            if isinstance(response, str):  # a redirect target
                if response in seen:
                    raise FetchError(url, f"redirect loop at {response}", kind="redirect_loop")
                seen.append(response)
                current = response
                continue
            return response
        raise FetchError(url, f"more than {self.max_redirects} redirects", kind="too_many_redirects")

    def _get(self, source: str, url: str, deadline: float, accept: tuple[str, ...],
             headers: dict[str, str] | None = None) -> Page | str:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return Page(source=source, body=b"", url=url, status=304,
                                etag=response.headers.get("etag"),
                                last_modified=response.headers.get("last-modified"))
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(source, f"HTTP {response.status_code} without Location")
                    return urljoin(url, location)
                if response.status_code >= 400:
                    raise FetchError(
                        source,
                        f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                        kind=f"http_{response.status_code}",
                        status=response.status_code,
                    )
                content_type = response.headers.get("content-type", "")
                media = content_type.split(";")[0].strip().lower()
                if media and accept and media not in accept:
                    raise SkipSource(source, f"not a text page (Content-Type {media})", kind="not_html")
                body = bytearray()
                for block in response.iter_bytes():
                    body += block
                    if len(body) > self.max_bytes:
                        raise SkipSource(
                            source,
                            f"page larger than {self.max_bytes} bytes (decompressed)",
                            kind="too_large",
                        )
                    if time.monotonic() > deadline:
                        raise FetchError(source, "timed out while reading the body", kind="timeout")
                return Page(
                    source=source,
                    body=bytes(body),
                    content_type=content_type or None,
                    url=url,
                    status=response.status_code,
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                )
        except httpx.TimeoutException as exc:
            raise FetchError(source, f"timed out after {self.timeout:g}s", kind="timeout") from exc
        except httpx.DecodingError as exc:
            raise FetchError(source, f"cannot decode the response: {exc}", kind="decoding") from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise FetchError(source, f"cannot connect: {reason}", kind="connection") from exc


def fetch(url: str, **limits) -> Page:
    """Fetch one URL with a short-lived client."""
    with Fetcher(**limits) as fetcher:
        return fetcher.fetch(url)
