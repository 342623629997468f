"""The only module that talks HTTP: limits, retries, politeness, redirects and address checks.

Every request, redirect hops and retries included, goes through the same gate: the scheme must be
http(s), the host must resolve to a public address unless private addresses are allowed for this
fetch, and the per-host delay must have passed. Failures become FetchError (or SkipSource for
pages deliberately not read) with a short machine-readable ``kind``.

This module (about 540 lines) and `Fetcher` (about 240) are a little over the house limits, for a
reason: this is the only module that talks HTTP (the deadline transport and the content-coding
decoder are parts of that one gate), and Fetcher is one request path (fetch -> _follow for
each redirect -> _get -> _read_body), and every step applies the same gate (scheme, address,
delay, size); spread over classes, a step could be reached without the others.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpcore
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
from kbindex.credentials import Credentials, needs_credentials_hint
from kbindex.errors import FetchError, SkipSource, SourceError, UsageError
from kbindex.records import Page

ALLOWED_SCHEMES = ("http", "https")
TEXT_TYPES = (
    "text/html", "application/xhtml+xml", "text/plain", "text/markdown", "text/x-markdown",
    "text/x-rst",
)

Resolver = Callable[[str], list[str]]  # host name -> its IP addresses

# Content codings read (RFC 9110 8.4.1; "x-gzip" is gzip's old name), and the most stacked in one
# response: real servers send one; each layer costs a decompressor (about 40 KiB of zlib state).
CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
MAX_CODING_LAYERS = 4
# The most bytes one decoding step may produce before the next layer (or the size check) sees
# them: every layer is decoded incrementally, so memory stays near this per layer plus the cap.
DECODE_PIECE = 64 * 1024


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
        """Seconds between two requests to `host`: the larger of the default and its own."""
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


# ------------------------------------------------------------ the whole-response deadline
#
# httpx has no total timeout (encode/httpx#1450): its read timeout restarts at every read, so a
# server that trickles its header block at one byte a second holds a request for hours. The
# connection pool below reads through sockets that honour the deadline of the request the calling
# thread is making (a request's reads all happen in the thread that makes it, and a thread makes
# one request at a time), so connecting, sending and reading the headers and the body all share it.

_deadline = threading.local()


def _until_deadline(timeout: float | None, error: type[Exception]) -> float | None:
    """The socket timeout for the next operation: `timeout`, or less when the deadline is nearer."""
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the whole-response deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _until_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _until_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(
            ssl_context, server_hostname, _until_deadline(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self):
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(
            host, port, _until_deadline(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(
            path, _until_deadline(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport over a pool of deadline-aware connections.

    HTTPTransport takes no network backend, so its pool (the `_pool` its handle_request uses,
    httpx 0.27-0.28) is replaced by one built the same way (same TLS context, httpx's default
    limits) with _DeadlineBackend. tests/test_fetch_limits.py fails if httpx stops using it.
    """

    def __init__(self):
        super().__init__(trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


# ------------------------------------------------------------ content codings


class _TooLarge(Exception):
    """A decoding layer produced more than the cap."""


def decode_body(raw: Iterable[bytes], codings: list[str], max_bytes: int) -> Iterator[bytes]:
    """The body as sent (raw blocks) decoded through its content codings, incrementally.

    `codings` in the order the Content-Encoding header lists them (applied in that order, so
    decoded last to first). Each layer, the raw bytes included, may produce at most `max_bytes`
    bytes and none hands on more than DECODE_PIECE at a time, so a stacked compression bomb stops
    at the cap instead of expanding a thousandfold per layer first (httpx's decoders take no
    output limit, which is why this is written with zlib's max_length).

    Raises:
        _TooLarge: a layer went past max_bytes.
        zlib.error: the data is not valid for its coding.
    """
    stream = _capped(raw, max_bytes)
    for coding in reversed(codings):
        stream = _capped(_inflate(stream, coding), max_bytes)
    return stream


def _capped(blocks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    total = 0
    for block in blocks:
        total += len(block)
        if total > max_bytes:
            raise _TooLarge
        yield block


def _inflate(blocks: Iterable[bytes], coding: str) -> Iterator[bytes]:
    """One gzip or deflate layer, in pieces of at most DECODE_PIECE bytes.

    gzip may hold several members one after the other (RFC 1952 2.2); "deflate" is the zlib
    format (RFC 9110 8.4.1.2), but some servers send raw deflate, which is tried when the zlib
    header is wrong (as browsers and httpx do).
    """
    wbits = 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    started = False
    for block in blocks:
        data = block
        while data:
            if decoder.eof:
                if coding != "gzip" or not decoder.unused_data.startswith(b"\x1f\x8b"):
                    break  # trailing bytes after the stream are ignored
                data, decoder = decoder.unused_data, zlib.decompressobj(wbits)
            try:
                out = decoder.decompress(data, DECODE_PIECE)
            except zlib.error:
                if started or coding != "deflate" or wbits < 0:
                    raise
                wbits = -zlib.MAX_WBITS
                decoder = zlib.decompressobj(wbits)
                continue
            started = True
            data = decoder.unconsumed_tail
            if decoder.eof and decoder.unused_data:
                data = decoder.unused_data
            if out:
                yield out
            # Output still held by the decoder comes with no more input: drain it piece by piece.
            while len(out) == DECODE_PIECE and not data and not decoder.eof:
                out = decoder.decompress(b"", DECODE_PIECE)
                data = decoder.unconsumed_tail
                if out:
                    yield out
    rest = decoder.flush() if not decoder.eof else b""
    if rest:
        yield rest


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing (credentials are sent by kbindex.credentials alone)."""

    def __init__(self):
        super().__init__(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


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
        credentials: Credentials | None = None,
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
        # Sent only to their own origins, hop by hop (kbindex.credentials); None: no credentials
        self.credentials = credentials
        self._addresses: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # followed by hand so each hop is checked
            trust_env=False,  # never route through a proxy from the environment
            transport=_DeadlineTransport(),  # a whole response within three times the timeout
            # No cookie is kept from a response: a jar ignores ports (RFC 6265 8.5), so a session
            # cookie one origin sets would go to another port of the same host.
            cookies=_NoCookies(),
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
                is read. An empty tuple reads everything.
            allow_private: whether hosts with non-public addresses may be contacted. None decides
                from the URL itself: a URL that names a private host explicitly is allowed to
                stay private (an intranet KB), a public one may never redirect to a private one.

        Raises:
            FetchError: the request failed; `kind` says how ("dns", "connection", "timeout",
                "http_404" and the like with `status`, "too_many_redirects", "redirect_loop",
                "bad_redirect", "private_address", "decoding", ...) and `transient` whether a later run may
                succeed. Transient failures are retried `retries` times first, with exponential
                backoff or the server's Retry-After (RFC 9110 10.2.3).
            SkipSource: a page deliberately not read (a media type not in `accept`: "not_html",
                a body over `max_bytes`: "too_large").
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
            except SourceError as exc:
                if self.credentials:  # a server may echo what it was sent: never shown
                    exc = self._redacted(exc)
                if not isinstance(exc, FetchError) or not exc.transient or attempt == self.retries:
                    raise exc from None
                wait = exc.retry_after if exc.retry_after is not None else self.backoff * 2**attempt
                if wait > self.max_retry_wait:
                    raise
                self.throttle.pause(host_key(url), wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _redacted(self, exc: SourceError) -> SourceError:
        reason = self.credentials.redact(exc.reason)
        if reason == exc.reason:
            return exc
        copy = exc.__class__.__new__(exc.__class__)
        copy.__dict__.update(exc.__dict__)
        copy.reason = reason
        copy.args = (f"{exc.source}: {reason}",)
        return copy

    def _follow(self, url: str, accept: tuple[str, ...], allow_private: bool,
                conditional: dict[str, str] | None = None) -> Page:
        seen = [url]
        current = url
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
            headers = dict(conditional or {})
            if self.credentials:  # checked at every hop: never across a redirect to another origin
                headers.update(self.credentials.headers_for(current))
            response = self._get(url, current, accept, headers)
            if isinstance(response, str):  # a redirect target
                if response in seen:
                    raise FetchError(url, f"redirect loop at {response}", kind="redirect_loop")
                seen.append(response)
                current = response
                continue
            return response
        raise FetchError(url, f"more than {self.max_redirects} redirects", kind="too_many_redirects")

    def _get(self, source: str, url: str, accept: tuple[str, ...],
             headers: dict[str, str] | None = None) -> Page | str:
        """One request: a Page, or the target of a redirect.

        The whole response (connecting, the header block and the body) must arrive within three
        times the timeout, whatever the pace of the bytes.
        """
        limit = self.timeout * 3
        _deadline.at = time.monotonic() + limit
        received = False  # whether the header block has arrived (which failures mean what)
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                received = True
                if response.status_code == 304:
                    return Page(source=source, body=b"", url=url, status=304,
                                etag=response.headers.get("etag"),
                                last_modified=response.headers.get("last-modified"))
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(source, f"HTTP {response.status_code} without Location")
                    return urljoin(url, location.strip())
                if response.status_code in (401, 403):
                    sent = bool(self.credentials and self.credentials.headers_for(url))
                    raise FetchError(
                        source,
                        f"HTTP {response.status_code} {response.reason_phrase}: "
                        + needs_credentials_hint(url, sent),
                        kind=f"http_{response.status_code}", status=response.status_code)
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
                body = self._read_body(source, response)
                return Page(
                    source=source,
                    body=body,
                    content_type=content_type or None,
                    url=url,
                    status=response.status_code,
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                )
        except httpx.TimeoutException as exc:
            if time.monotonic() >= _deadline.at:
                raise FetchError(source, f"no complete response within {limit:g}s (three times the "
                                 f"timeout of {self.timeout:g}s)", kind="timeout") from exc
            raise FetchError(source, f"timed out after {self.timeout:g}s", kind="timeout") from exc
        except httpx.TransportError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if received:  # a Content-Length or chunked body that stopped short, a reset
                raise FetchError(source, f"the server closed the connection early ({reason})",
                                 kind="connection") from exc
            if isinstance(exc, httpx.RemoteProtocolError):
                raise FetchError(source, f"invalid HTTP response: {reason}", kind="connection") from exc
            raise FetchError(source, f"cannot connect: {reason}", kind="connection") from exc
        finally:
            _deadline.at = None

    def _read_body(self, source: str, response: httpx.Response) -> bytes:
        """The decoded body, each decoding layer capped at max_bytes while it is read."""
        codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
        codings = [c for c in codings if c and c != "identity"]
        unknown = [c for c in codings if c not in CODINGS]
        if unknown:
            raise FetchError(source, f"unsupported Content-Encoding {unknown[0]!r}", kind="decoding")
        if len(codings) > MAX_CODING_LAYERS:
            raise FetchError(source, f"{len(codings)} stacked content encodings (at most "
                             f"{MAX_CODING_LAYERS} are read)", kind="decoding")
        body = bytearray()
        try:
            for block in decode_body(response.iter_raw(), [CODINGS[c] for c in codings], self.max_bytes):
                body += block
        except _TooLarge:
            layers = f" (decompressed, {len(codings)} layers)" if len(codings) > 1 else \
                " (decompressed)" if codings else ""
            raise SkipSource(source, f"page larger than {self.max_bytes} bytes{layers}",
                             kind="too_large") from None
        except zlib.error as exc:
            raise FetchError(source, f"cannot decode the {', '.join(codings)} response: {exc}",
                             kind="decoding") from exc
        return bytes(body)

