"""JavaScript rendering: pages whose HTML is an app shell are run in headless Chromium, and the DOM
they build is what gets extracted.

The browser is Debian's `chromium` (`make install-browser`), driven through Playwright's Python
API with `executable_path`: no browser is downloaded. One browser per run, a small pool of tabs.

The browser never opens a connection of its own: every request a page makes is intercepted
(Playwright routing) and either refused (route.abort) or answered (route.fulfill) with a body
fetched by kbindex's own fetch.Fetcher, under the crawl's rules: the private-address check, the
crawl's hosts (scope), robots.txt, the size and time limits, and credentials for their origins
only. Images, fonts, media and style sheets are never requested: text does not need them. A
dead proxy is configured as well, so a request that escaped the routing (a WebSocket) fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import lxml.html

from kbindex.errors import FetchError, KbindexError, SourceError, UsageError
from kbindex.fetch import Fetcher
from kbindex.records import Page

log = logging.getLogger("kbindex.render")

ENV_RENDER = "KBINDEX_RENDER"
ENV_CHROMIUM = "KBINDEX_CHROMIUM"  # the browser's path, where it is not `chromium` on PATH
MODES = ("never", "auto", "always")
INSTALL_HINT = "run `make install-browser` (installs Debian's chromium)"
# An app shell: fewer words of text than this outside <script>, <style>, <noscript> and <template>
# while the page loads a script. A real KB article has a few hundred; a React/Vue shell has none
# or a "loading..." line, and its <noscript> says to enable JavaScript.
SHELL_WORDS = 20
# Requests of these kinds are aborted (Playwright's resource types): they add no text.
NOT_LOADED = frozenset({"image", "font", "media", "stylesheet", "imageset", "texttrack"})
DEFAULT_PAGES = 4  # tabs rendering at once; each costs tens of MB of browser memory
RENDER_TIMEOUT = 15.0  # seconds for a page to load and its network to go idle; then it is taken
# as it stands
_SCRIPT_TAG = re.compile(rb"<script", re.IGNORECASE)
_DEAD_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, so nothing leaves through it


def find_chromium() -> str | None:
    """The system Chromium's path ($KBINDEX_CHROMIUM, else chromium on PATH), or None."""
    explicit = os.environ.get(ENV_CHROMIUM)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_available() -> bool:
    """Whether pages can be rendered here: a system Chromium and Playwright's Python package."""
    if find_chromium() is None:
        return False
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_mode(mode: str | None) -> str:
    """The --render mode in effect: the one asked for, or auto where a browser is installed.

    Raises UsageError for auto/always without a browser (a one-line message naming the make
    target) and for an unknown mode.
    """
    if mode is None:
        return "auto" if browser_available() else "never"
    if mode not in MODES:
        raise UsageError(f"--render must be never, auto or always, not {mode!r}")
    if mode != "never" and not browser_available():
        raise UsageError(f"--render {mode} needs headless Chromium: {INSTALL_HINT}")
    return mode


def is_app_shell(body: bytes) -> bool:
    """True for HTML that has almost no text (< SHELL_WORDS words) but loads or holds a script.

    A page without the bytes "<script" is not parsed at all: most KB pages are told apart
    without a second parse (the crawl parses each page once, in crawl.analysis).
    """
    if not _SCRIPT_TAG.search(body):
        return False
    try:
        root = lxml.html.document_fromstring(body)
    except (ValueError, lxml.etree.ParserError):
        return False
    scripts = [s for s in root.iter("script")
               if (s.get("type") or "").lower() not in ("application/ld+json", "application/json")]
    if not scripts:
        return False
    for element in list(root.iter("script", "style", "noscript", "template")):
        element.drop_tree()
    return len(root.text_content().split()) < SHELL_WORDS


def needs_render_error(source: str, mode: str) -> SourceError:
    """The report for an app shell not rendered: what it is and how to index it."""
    how = "index it with --render auto" if browser_available() else f"{INSTALL_HINT}, then use --render auto"
    return SourceError(source, f"needs JavaScript rendering: the page is an app shell (scripts, "
                       f"almost no text) and --render is {mode}; {how}", kind="needs_render")


# A refusal reason for a request URL, or None to fetch it.
Policy = Callable[[str], str | None]


class Renderer:
    """One headless Chromium for a run; `render` is safe to call from many threads at once.

    The browser starts on the first `render` (a run with no app shell never starts it) in a
    thread of its own that runs Playwright's asyncio API; `pages` tabs render at once. Close it
    with `close` (or use it as a context manager).
    """

    def __init__(self, fetcher: Fetcher, pages: int = DEFAULT_PAGES, timeout: float = RENDER_TIMEOUT,
                 executable: str | None = None):
        self.fetcher = fetcher
        self.pages = pages
        self.timeout = timeout
        self.executable = executable or find_chromium()
        self.refused: list[tuple[str, str]] = []  # (URL, reason) of every request refused
        self.rendered = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._browser = None
        self._context = None
        self._playwright = None
        self._slots: asyncio.Semaphore | None = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the browser thread

    def _start(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            if not self.executable:
                raise UsageError(f"rendering needs headless Chromium: {INSTALL_HINT}")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="kbindex-render", daemon=True)
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._launch(), loop).result(timeout=60)
            except Exception as exc:
                loop.call_soon_threadsafe(loop.stop)
                raise KbindexError(f"cannot start headless Chromium ({self.executable}): "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
            self._loop, self._thread = loop, thread

    async def _launch(self) -> None:
        from playwright.async_api import async_playwright

        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=self.executable, headless=True,
            proxy={"server": _DEAD_PROXY, "bypass": ""},
            # the proxy for loopback too (Chromium bypasses it for loopback by default)
            args=["--proxy-bypass-list=<-loopback>", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync",
                  # memory: one renderer process per tab at most, no GPU process, no process per
                  # site (every page a crawl renders comes from its own hosts anyway)
                  "--disable-gpu", f"--renderer-process-limit={self.pages}",
                  "--disable-site-isolation-trials", "--disable-features=site-per-process",
                  "--disable-extensions", "--mute-audio"],
        )
        self._context = await self._browser.new_context(
            user_agent=self.fetcher.user_agent, service_workers="block", accept_downloads=False)
        self._slots = asyncio.Semaphore(self.pages)

    def close(self) -> None:
        """Close the browser and stop its thread."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            try:
                await self._browser.close()
            finally:
                await self._playwright.stop()

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=30)
        except Exception:  # noqa: BLE001 - a browser that died already: nothing left to close
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------ rendering

    def render(self, page: Page, policy: Policy, allow_private: bool) -> Page:
        """The page as the browser leaves it: its DOM serialized as HTML (UTF-8).

        `page` is the document as already fetched (it is not requested again); every other
        request is refused when `policy(url)` gives a reason, or fetched by the Fetcher with
        `allow_private`. Raises SourceError(kind="render") when the page cannot be rendered.
        """
        self._start()
        future = asyncio.run_coroutine_threadsafe(self._render(page, policy, allow_private), self._loop)
        try:
            html = future.result(timeout=self.timeout * 2 + 30)
        except SourceError:
            raise
        except Exception as exc:  # Playwright's errors, a browser that died
            future.cancel()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(page.source, f"cannot render the page: {reason}", kind="render") from exc
        with self._lock:
            self.rendered += 1
        return replace(page, body=html.encode("utf-8"), content_type="text/html; charset=utf-8")

    async def _render(self, page: Page, policy: Policy, allow_private: bool) -> str:
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        url = page.url or page.source
        async with self._slots:
            # One context for the run: no cookie or storage reaches it (responses are fulfilled
            # with a Content-Type only), and a context per page cost more time than it isolated.
            tab = await self._context.new_page()
            try:
                await tab.route("**/*", lambda route: self._route(route, url, page, policy, allow_private))
                started = time.monotonic()
                try:
                    await tab.goto(url, wait_until="load", timeout=self.timeout * 1000)
                    left = max(0.1, self.timeout - (time.monotonic() - started))
                    await tab.wait_for_load_state("networkidle", timeout=left * 1000)
                except PlaywrightTimeout:
                    pass  # the deadline: the DOM as it stands is taken
                return await tab.content()
            finally:
                await tab.close()

    async def _route(self, route, url: str, page: Page, policy: Policy, allow_private: bool) -> None:
        request = route.request
        target = request.url
        if target == url and request.is_navigation_request() and request.frame.parent_frame is None:
            await route.fulfill(status=200, body=page.body,
                                content_type=page.content_type or "text/html; charset=utf-8")
            return
        if request.resource_type in NOT_LOADED:
            await route.abort("blockedbyclient")
            return
        reason = "not a GET request" if request.method != "GET" else None
        if reason is None and not target.startswith(("http://", "https://")):
            reason = "not an http(s) URL"
        if reason is None:
            reason = await asyncio.get_running_loop().run_in_executor(None, policy, target)
        if reason is None:
            try:
                got = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.fetcher.fetch(target, accept=(), allow_private=allow_private))
            except FetchError as exc:
                if exc.status is None:
                    reason = exc.reason
                else:  # an HTTP error is the script's to handle, as a browser would
                    await route.fulfill(status=exc.status, body=b"")
                    return
            except SourceError as exc:  # too large, ...
                reason = exc.reason
            else:
                await route.fulfill(status=got.status or 200, body=got.body,
                                    content_type=got.content_type or "application/octet-stream")
                return
        self._refuse(url, target, reason)
        await route.abort("blockedbyclient")

    def _refuse(self, page_url: str, target: str, reason: str) -> None:
        with self._lock:
            self.refused.append((target, reason))
        log.warning("render: %s: refused %s: %s", page_url, target[:200], reason)
