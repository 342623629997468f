"""The only module that talks HTTP: limits, retries, politeness, redirects and address checks.

Every request, redirect hops and retries included, goes through the same gate: the scheme must be
http(s), the host must resolve to a public address unless private addresses are allowed for this
fetch, and the per-host delay must have passed. Failures become FetchError (or SkipSource for
pages deliberately not read) with a short machine-readable ``kind``.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from kbindex.config import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_RETRY_WAIT,
    USER_AGENT,
)
from kbindex.errors import FetchError, SkipSource, UsageError
from kbindex.records import Page

ALLOWED_SCHEMES = ("http", "https")
TEXT_TYPES = (
    "text/html", "application/xhtml+xml", "text/plain", "text/markdown", "text/x-markdown",
    "text/x-rst",
)
ANY_TYPE: tuple[str, ...] = ()  # accept= value that reads every content type

Resolver = Callable[[str], list[str]]  # host name -> its IP addresses


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


def system_resolver(host: str) -> list[str]:
    """The host's addresses from the system resolver (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0].split("%", 1)[0] for info in infos})


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local, ...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def host_key(url: str) -> str:
    """What per-host politeness is keyed on: host and port."""
    parts = urlsplit(url)
    return (parts.hostname or "") + (f":{parts.port}" if parts.port else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HostThrottle:
    """At most one request start per host every `delay` seconds (thread-safe)."""

    def __init__(self, delay: float, clock=time.monotonic, sleep=time.sleep):
        self.delay = delay
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._host_delay: dict[str, float] = {}
        self._lock = threading.Lock()

    def set_delay(self, host: str, seconds: float) -> None:
        """A host's own delay (robots.txt Crawl-delay); the larger of it and the default wins."""
        with self._lock:
            self._host_delay[host] = seconds

    def delay_for(self, host: str) -> float:
        return max(self.delay, self._host_delay.get(host, 0.0))

    def wait(self, host: str) -> None:
        """Block until this host may get the next request, and book the slot after it."""
        with self._lock:
            now = self._clock()
            at = max(now, self._next.get(host, now))
            self._next[host] = at + self.delay_for(host)
        if at > now:
            self._sleep(at - now)

    def pause(self, host: str, seconds: float) -> None:
        """No request to this host for `seconds` (Retry-After, backoff)."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), self._clock() + seconds)


class Fetcher:
    """Fetches URLs with a timeout, a decompressed-size cap, redirect limits, retries,
    a per-host delay and an address check at every hop. Safe to share between threads."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        user_agent: str = USER_AGENT,
        check_url: Callable[[str], None] | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_retry_wait: float = MAX_RETRY_WAIT,
        delay: float = 0.0,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.check_url = check_url  # called on every URL, redirect hops included
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.allow_private = allow_private
        self.resolver = resolver  # a seam: tests pretend a 127.0.0.1 server is a public host
        self.throttle = HostThrottle(delay, sleep=sleep)
        self._addresses: dict[str, list[str]] = {}
        self._lock = threading.Lock()
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

    # ------------------------------------------------------------ addresses

    def addresses(self, host: str) -> list[str]:
        """The host's addresses, resolved once per Fetcher."""
        with self._lock:
            cached = self._addresses.get(host)
        if cached is None:
            try:
                cached = self.resolver(host)
            except (OSError, UnicodeError):
                cached = []
            with self._lock:
                self._addresses[host] = cached
        return cached

    def is_private_host(self, url: str) -> bool:
        """True when the URL's host resolves to any non-public address."""
        host = urlsplit(url).hostname or ""
        return any(not is_public_address(a) for a in self.addresses(host))

    def _check_address(self, source: str, url: str) -> None:
        host = urlsplit(url).hostname or ""
        found = self.addresses(host)
        if not found:
            raise FetchError(source, f"cannot resolve host {host}", kind="dns")
        private = [a for a in found if not is_public_address(a)]
        if private:
            raise FetchError(
                source,
                f"refused {url}: {host} resolves to the non-public address {private[0]} "
                "(use --allow-private to allow)",
                kind="private_address",
            )

    # ------------------------------------------------------------ fetching

    def fetch(
        self, url: str, *, accept: tuple[str, ...] = TEXT_TYPES, allow_private: bool | None = None,
        etag: str | None = None, last_modified: str | None = None,
    ) -> Page:
        """GET a URL, following redirects and retrying transient failures.

        With etag / last_modified (from an earlier fetch) the request is conditional: a server
        that answers 304 Not Modified yields a Page with status 304 and an empty body.

        Args:
            accept: media types read; others raise SkipSource(kind="not_html") before the body
                is read. ANY_TYPE reads everything.
            allow_private: whether hosts with non-public addresses may be contacted. None decides
                from the URL itself: a URL that names a private host explicitly is allowed to
                stay private (an intranet KB), a public one may never redirect to a private one.
        """
        check_scheme(url)
        conditional = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        if allow_private is None:
            allow_private = self.allow_private or self.is_private_host(url)
        for attempt in range(self.retries + 1):
            try:
                return self._follow(url, accept, allow_private, conditional)
            except FetchError as exc:
                if not exc.transient or attempt == self.retries:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else self.backoff * 2**attempt
                if wait > self.max_retry_wait:
                    raise
                self.throttle.pause(host_key(url), wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _follow(self, url: str, accept: tuple[str, ...], allow_private: bool,
                conditional: dict[str, str] | None = None) -> Page:
        seen = [url]
        current = url
        deadline = time.monotonic() + self.timeout * 3
        for _ in range(self.max_redirects + 1):
            if current != url:
                try:
                    check_scheme(current)
                except UsageError as exc:
                    raise FetchError(url, f"redirect to {current} refused: {exc}", kind="bad_redirect") from exc
            if self.check_url:
                self.check_url(current)
            if not allow_private:
                self._check_address(url, current)
            self.throttle.wait(host_key(current))
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
                    return urljoin(url, location.strip())
                if response.status_code >= 400:
                    retry_after = None
                    if response.status_code in (429, 503):
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
                    raise FetchError(
                        source,
                        f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                        kind=f"http_{response.status_code}",
                        status=response.status_code,
                        retry_after=retry_after,
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
