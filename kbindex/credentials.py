"""Credentials for private knowledge bases: request headers and browser cookies, sent only to the
origins of the sources they were given for, and redacted wherever text leaves kbindex.

An origin is (scheme, host, port), as RFC 6454 defines it: credentials given for
https://kb.example.com/ are never sent to http://kb.example.com/, to kb.example.com:8443, to
cdn.example.com, nor across a redirect or to a sitemap or feed on any of those.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import string
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from kbindex.errors import ConfigError, UsageError

REDACTED = "***"
# RFC 9110 5.1: a field name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Parts of a secret shorter than this are not redacted on their own ("Bearer", a scheme name):
# redacting them would garble ordinary text without hiding anything secret.
_MIN_SECRET_PART = 8
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """The URL's origin, "scheme://host:port" with the port always written (RFC 6454 4)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or _DEFAULT_PORTS.get(scheme, 0)}"


def expand_env(value: str, where: str) -> str:
    """`${NAME}` (or `$NAME`) replaced by the environment variable's value; `$$` is a dollar sign.

    Raises:
        ConfigError: a variable that is not set (the message names it, never a value).
    """
    try:
        return string.Template(value).substitute(os.environ)
    except KeyError as exc:
        raise ConfigError(f"{where}: environment variable {exc.args[0]} is not set") from None
    except ValueError:
        raise ConfigError(f"{where}: a '$' that is not ${{NAME}} (write $$ for a dollar sign)") from None


def parse_headers(spec: Mapping[str, str] | Iterable[str] | None, where: str = "--header") -> dict[str, str]:
    """Headers from "Name: value" strings (the command line, a config list) or a config table.

    Values may name environment variables (`"Bearer ${KB_TOKEN}"`). Raises UsageError for a
    malformed header; the message never repeats the value.
    """
    if not spec:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, Mapping):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    else:
        for item in spec:
            name, sep, value = str(item).partition(":")
            if not sep:
                raise UsageError(f"{where} must be 'Name: value' (a header without ':' was given)")
            pairs.append((name, value))
    headers: dict[str, str] = {}
    for name, value in pairs:
        name, value = name.strip(), value.strip()
        if not _TOKEN.match(name):
            raise UsageError(f"{where}: {name[:40]!r} is not a valid header name")
        value = expand_env(value, f"{where} {name}")
        if "\r" in value or "\n" in value:
            raise UsageError(f"{where} {name}: the value holds a line break")
        headers[name] = value
    return headers


# The first line http.cookiejar.MozillaCookieJar requires (its own magic_re).
COOKIES_MAGIC = re.compile(r"#( Netscape)? HTTP Cookie File")


def load_cookies(path: str | os.PathLike) -> http.cookiejar.MozillaCookieJar:
    """A Netscape cookies.txt file (what browser extensions export), without expired cookies.

    An expiry of 0 is a session cookie (browser extensions write them so); http.cookiejar would
    read it as expired in 1970, so the file is read with expiry ignored and 0 made "no expiry".
    Raises UsageError when the file cannot be read or is not in that format.
    """
    jar = http.cookiejar.MozillaCookieJar()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        if not COOKIES_MAGIC.search(text.split("\n", 1)[0]):
            # http.cookiejar insists on the format's first line, which hand-written files and
            # some exporters leave out: read such a file as if it had it (a private temporary
            # copy, 0600, removed at once).
            text = "# Netscape HTTP Cookie File\n" + text
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as copy:
            copy.write(text)
            copy.flush()
            jar.load(copy.name, ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError:
        # LoadError (an OSError, so caught first) may quote a line of the file: not repeated
        raise UsageError(f"--cookies: {path} is not a Netscape cookies.txt file: each cookie is one "
                         "line of seven tab-separated fields (domain, subdomains flag, path, secure "
                         "flag, expiry, name, value)") from None
    except OSError as exc:
        raise UsageError(f"--cookies: cannot read {path}: {exc.strerror or exc}") from None
    now = time.time()
    for cookie in list(jar):
        if cookie.expires == 0:
            cookie.expires, cookie.discard = None, False
        elif cookie.expires is not None and cookie.expires <= now:
            jar.clear(cookie.domain, cookie.path, cookie.name)
    return jar


class Credentials:
    """Headers and cookies for a set of origins. Thread-safe to read (it is never changed).

    `headers_for(url)` is what fetch.Fetcher adds to each request; `redact(text)` hides every
    secret value in a text. str() and repr() never show a value.
    """

    def __init__(self, origins: Iterable[str], headers: Mapping[str, str] | None = None,
                 cookies: http.cookiejar.CookieJar | None = None):
        self.origins = frozenset(origin(u) if "://" in u else u for u in origins)
        self.headers = dict(headers or {})
        self.cookies = cookies
        secrets = set(self.headers.values())
        for cookie in cookies or ():
            if cookie.value:
                secrets.add(cookie.value)
        parts = {p for s in secrets for p in re.split(r"[\s,;]+", s) if len(p) >= _MIN_SECRET_PART}
        self._secrets = sorted({s for s in secrets if s} | parts, key=len, reverse=True)

    @classmethod
    def for_sources(cls, sources: Iterable[str], headers=None, cookies_file: str | None = None,
                    where: str = "--header") -> Credentials | None:
        """Credentials for the origins of the URL sources, or None when none were given.

        Checked (and environment variables read) even when no source is a URL, so that a
        mistake shows at once; folders then have nothing to send them to (a collection's
        `headers` in kbindex.toml apply to its folder sources too).
        """
        parsed = parse_headers(headers, where)
        jar = load_cookies(cookies_file) if cookies_file else None
        urls = [s for s in sources if "://" in s]
        if (not parsed and jar is None) or not urls:
            return None
        return cls(urls, parsed, jar)

    def __bool__(self) -> bool:
        return bool(self.headers) or bool(self.cookies is not None and len(self.cookies))

    def __repr__(self) -> str:
        names = ", ".join(f"{k}: {REDACTED}" for k in self.headers)
        return f"Credentials(origins={sorted(self.origins)}, headers=[{names}], " \
               f"cookies={len(self.cookies) if self.cookies is not None else 0})"

    __str__ = __repr__

    def applies(self, url: str) -> bool:
        """Whether requests to `url` carry these credentials (its origin is one they are for)."""
        return origin(url) in self.origins

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers to add to a request for `url`: none outside the origins.

        Cookies are chosen by the cookie rules (domain, path, Secure, expiry: RFC 6265 through
        http.cookiejar) among those in the file, and only for the origins.
        """
        if not self.applies(url):
            return {}
        headers = dict(self.headers)
        if self.cookies is not None:
            request = urllib.request.Request(url)
            self.cookies.add_cookie_header(request)
            cookie = request.get_header("Cookie")
            if cookie:
                headers["Cookie"] = (headers["Cookie"] + "; " + cookie) if "Cookie" in headers else cookie
        return headers

    def redact(self, text: str) -> str:
        """`text` with every secret (a header or cookie value, or a long part of one) as ***."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def needs_credentials_hint(url: str, sent: bool) -> str:
    """The advice a 401 or 403 carries: how to pass credentials, or that those sent were refused."""
    where = origin(url)
    if sent:
        return (f"the credentials given for {where} were refused (check the token or export the "
                "cookies again: they may have expired)")
    return (f"{where} needs credentials: pass --header 'Authorization: Bearer ${{TOKEN}}' or "
            "--cookies cookies.txt, or set headers/cookies for this source in kbindex.toml")
