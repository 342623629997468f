"""JavaScript rendering: a KB whose articles a script builds from a JSON endpoint is indexed with
--render auto; with never it is reported as needing rendering; every request the browser makes
goes through kbindex's rules (a private address and an off-scope host refused and logged; images
never requested).

Real parts: Debian's Chromium through Playwright (skipped, saying so, where there is none), fixture
servers on 127.0.0.1, kbindex in a subprocess.
"""

from __future__ import annotations

import logging

import pytest

from kbindex.crawl import Crawler, CrawlOptions, CrawlResult
from kbindex.errors import SourceError, UsageError
from kbindex.fetch import Fetcher, system_resolver
from kbindex.records import Page
from kbindex.render import SHELL_WORDS, Renderer, browser_available, is_app_shell, resolve_mode
from tests.render_site import SHELL, plain_page, requested, site
from tests.sync_helpers import run, summary

needs_browser = pytest.mark.skipif(not browser_available(),
                                   reason="no chromium (make install-browser) or no playwright")
FAST = ("--delay", "0", "--retries", "0")


class PretendPublic:
    """A resolver seam: 127.0.0.1 pretends to be a public host; the rest resolves as usual."""

    def __call__(self, host):
        return ["93.184.215.14"] if host == "127.0.0.1" else system_resolver(host)


# ------------------------------------------------------------ without a browser


def test_app_shell_detection():
    assert is_app_shell(SHELL)
    assert not is_app_shell(plain_page(1))
    assert not is_app_shell(b"<html><body><p>short page without scripts</p></body></html>")
    words = " ".join(["word"] * SHELL_WORDS)
    assert not is_app_shell(f"<html><body><script src=a.js></script><p>{words}</p></body></html>".encode())
    assert is_app_shell(b"<html><body><div id=root></div><script>render()</script>"
                        b"<noscript>" + b"enable javascript please " * 20 + b"</noscript></body></html>")
    # structured data is not a script that builds the page
    assert not is_app_shell(b"<html><body><script type='application/ld+json'>{}</script></body></html>")


def test_never_reports_the_page_as_needing_rendering(tmp_path):
    with site(2) as kb:
        code, out, err = run("index", kb.url("/kb/"), "--db", str(tmp_path / "db"), *FAST,
                             env={"KBINDEX_RENDER": "never"}, tmp=tmp_path)
        assert "/static/app.js" not in requested(kb)
    assert code == 1
    assert "needs JavaScript rendering" in out + err and "--render auto" in out + err
    assert "empty" not in out + err


def test_render_without_a_browser_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setenv("KBINDEX_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(UsageError, match="make install-browser"):
        resolve_mode("auto")
    assert resolve_mode(None) == "never"
    code, out, err = run("index", "http://127.0.0.1:9/kb/", "--db", str(tmp_path / "db"), "--render", "always",
                         env={"KBINDEX_CHROMIUM": str(tmp_path / "no-such-chromium")}, tmp=tmp_path)
    assert code == 2 and "make install-browser" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------ with the browser


@pytest.mark.browser
@needs_browser
def test_render_auto_indexes_a_script_built_kb(tmp_path):
    db = tmp_path / "db"
    with site(3) as kb:
        code, out, err = run("index", kb.url("/kb/"), "--db", str(db), "--render", "auto", "--json",
                             *FAST, tmp=tmp_path)
        assert code == 0, err
        assert summary(out)["indexed"] == 3  # the three articles; the list page is a listing
        paths = requested(kb)
        assert "/api/a2.json" in paths and "/static/app.js" in paths
        assert "/static/logo.png" not in paths and "/static/site.css" not in paths  # never loaded
        code, hits, err = run("query", "vpn reconnects", "--db", str(db), "--json", tmp=tmp_path)
        assert code == 0 and "/kb/a1.html" in hits and "Article 1 explains vpn reconnects" in hits


@pytest.mark.browser
@needs_browser
def test_the_browser_cannot_reach_private_addresses_or_other_hosts(caplog):
    with site(0) as other, site(1) as kb:
        # the article's script also asks for the cloud metadata address, a loopback name, another
        # host (another port: another origin, out of scope) and an API on its own host
        extra = ["http://169.254.169.254/latest/meta-data/", f"http://localhost:{kb.port}/secret",
                 other.url("/api/stolen.json"), "/api/a0.json?ok"]
        with site(1, extra_requests=tuple(extra)) as template:
            kb.routes["/kb/a0.html"] = template.routes["/kb/a0.html"]
        with Fetcher(timeout=2, retries=0, delay=0, resolver=PretendPublic()) as fetcher, \
                Renderer(fetcher, timeout=5) as renderer, caplog.at_level(logging.WARNING, "kbindex.render"):
            options = CrawlOptions(render="auto", renderer=renderer, depth=0)
            items = list(Crawler(fetcher, options).crawl(kb.url("/kb/a0.html"), CrawlResult(kb.url("/"))))
        assert other.log == [], "the browser reached another host"
        assert "/secret" not in requested(kb)
        assert "/api/a0.json?ok" in requested(kb)  # its own host: fetched through kbindex
        refused = dict(renderer.refused)
        assert "non-public address" in refused["http://169.254.169.254/latest/meta-data/"]
        assert "non-public address" in refused[f"http://localhost:{kb.port}/secret"]
        assert "out of scope" in refused[other.url("/api/stolen.json")]
        logged = caplog.text
        assert "169.254.169.254" in logged and other.url("/api/stolen.json") in logged
        pages = [i for i in items if isinstance(i, Page)]
        assert len(pages) == 1 and b"Article 0 explains" in pages[0].body


@pytest.mark.browser
@needs_browser
def test_render_always_and_a_broken_script_still_yield_the_page():
    with site(1, plain=True) as kb:
        kb.routes["/kb/a0.html"].body = kb.routes["/kb/a0.html"].body.replace(
            b"</body>", b"<script>throw new Error('broken')</script><script src='/missing.js'></script></body>")
        with Fetcher(timeout=2, retries=0, delay=0) as fetcher, Renderer(fetcher, timeout=5) as renderer:
            options = CrawlOptions(render="always", renderer=renderer, depth=0)
            items = list(Crawler(fetcher, options).crawl(kb.url("/kb/a0.html"), CrawlResult(kb.url("/"))))
        assert renderer.rendered == 1
        pages = [i for i in items if isinstance(i, Page)]
        assert len(pages) == 1 and b"Article 0 explains" in pages[0].body, items
        assert not [i for i in items if isinstance(i, SourceError)]
