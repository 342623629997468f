"""Which URLs a crawl may fetch: the start URL's host and folder (or whole host), filtered by
--include and --exclude."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kbindex.crawl.urls import page_name
from kbindex.errors import UsageError


@dataclass(frozen=True)
class Scope:
    """Which URLs a crawl may fetch: same scheme and host, under a path prefix, filtered by
    --include/--exclude regular expressions (searched in the page's name: page_name)."""

    roots: tuple[tuple[str, str, str], ...]  # (scheme, netloc, path prefix)
    include: tuple[re.Pattern, ...] = ()
    exclude: tuple[re.Pattern, ...] = ()

    @classmethod
    def for_start(cls, url: str, mode: str = "path", include=(), exclude=()) -> Scope:
        """The scope of a crawl started at `url`: its folder (mode "path") or its whole host
        (mode "host"); `include`/`exclude` are compiled patterns (compile_patterns)."""
        return cls((), tuple(include), tuple(exclude)).widen(url, mode)

    def widen(self, url: str, mode: str = "path") -> Scope:
        """This scope plus the root of url (a start URL, or where it redirected)."""
        parts = urlsplit(page_name(url) or url)
        if mode == "host":
            prefix = "/"
        elif parts.path.endswith("/"):
            prefix = parts.path
        else:
            head, _, last = parts.path.rpartition("/")
            # /docs is the docs folder; /docs/index.html is a page in it.
            prefix = parts.path + "/" if "." not in last else head + "/"
        root = (parts.scheme, parts.netloc, prefix)
        if root in self.roots:
            return self
        return Scope(self.roots + (root,), self.include, self.exclude)

    def in_roots(self, url: str) -> bool:
        """Whether `url` has a root's scheme and host and lies under its path prefix (the
        folder itself included, with or without its trailing slash)."""
        parts = urlsplit(page_name(url) or url)  # no user info or default port
        for scheme, netloc, prefix in self.roots:
            if parts.scheme == scheme and parts.netloc == netloc and (
                parts.path.startswith(prefix) or parts.path == prefix.rstrip("/")
            ):
                return True
        return False

    def contains(self, url: str) -> bool:
        """Whether the crawl may fetch `url`: in a root, matching an --include pattern when
        there are any and no --exclude pattern (both searched in its page_name)."""
        if not self.in_roots(url):
            return False
        name = page_name(url) or url
        if self.include and not any(p.search(name) for p in self.include):
            return False
        return not any(p.search(name) for p in self.exclude)


def compile_patterns(patterns, option: str) -> tuple[re.Pattern, ...]:
    """Regular expressions from the command line; a bad one is a usage error."""
    out = []
    for pattern in patterns:
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise UsageError(f"{option} {pattern!r} is not a valid regular expression: {exc}") from exc
    return tuple(out)

