"""The web page at / in a real headless browser: Debian's `chromium`, driven by Playwright.

Skipped with a message when no Chromium is installed (`.ci/run` installs it). Playwright is told
to use the system's browser (executable_path): it downloads none.

KBINDEX_SCREENSHOT=docs/serve-page.png also saves the page with results there (README's picture).
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.serving import ROOT, Served, kbindex

pytestmark = pytest.mark.browser

SAMPLE_KB = ROOT / "data" / "sample-kb"
CHROMIUM = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve-page") / "index"
    for collection in ("kbindex", "second"):
        done = kbindex("index", str(SAMPLE_KB), "--db", str(db), "--model", "fake:hash", "-q",
                       "--collection", collection)
        assert done.returncode == 0, done.stderr
    return db


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    context.close()


def titles(page) -> list[str]:
    page.wait_for_selector("#results li")
    return page.locator("#results .title").all_inner_texts()


def test_search_from_the_box_and_from_a_link(indexed, page):
    with Served(indexed) as served:
        page.goto(served.url + "/")
        # Focus on load: typing goes straight into the box; Enter searches.
        assert page.evaluate("document.activeElement.id") == "q"
        page.evaluate("window.notReloaded = true")
        page.keyboard.type("printer offline spooler")
        page.keyboard.press("Enter")
        assert titles(page)[0].startswith("Printer Shows Offline in Windows")
        assert page.evaluate("window.notReloaded") is True  # results came without a reload
        query = parse_qs(urlsplit(page.url).query)
        assert query["q"] == ["printer offline spooler"] and query["collection"] == ["kbindex"]

        first = page.locator("#results li").first
        assert first.locator(".section").inner_text()  # the section path
        assert first.locator("mark").count() >= 1  # query terms highlighted
        assert all(m.lower().startswith(("printer", "offline", "spooler"))
                   for m in first.locator("mark").all_inner_texts())
        href = first.locator(".title").get_attribute("href")
        assert href.startswith("file://") and "printer-offline-windows.html#" in href  # section anchor
        assert "matched by" in first.locator(".why").inner_text()
        assert first.locator(".source").inner_text().endswith("printer-offline-windows.html")
        if os.environ.get("KBINDEX_SCREENSHOT"):
            page.screenshot(path=str(ROOT / os.environ["KBINDEX_SCREENSHOT"]), full_page=False)

        # A linked search shows its results on opening, in the linked collection.
        page.goto(served.url + "/?q=reset+mfa+authenticator+new+phone&collection=second")
        assert "Authenticator" in titles(page)[0]
        assert page.locator("#collection").input_value() == "second"
        assert page.locator("#q").input_value() == "reset mfa authenticator new phone"
        # Back goes to the previous search.
        page.locator("#q").fill("postgresql wal disk full")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#results .title').textContent.includes('PostgreSQL')")
        page.go_back()
        page.wait_for_function("document.querySelector('#results .title').textContent.includes('Authenticator')")
        # Nothing came from anywhere but this server.
        assert all(url.startswith(served.url) for url in page.requested), page.requested


def test_readable_on_a_phone(indexed, browser):
    with Served(indexed) as served:
        context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
        page = context.new_page()
        page.goto(served.url + "/?q=laptop+battery+drain+modern+standby")
        assert titles(page)
        # No sideways scrolling, and the search box stays usable.
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert page.locator("#q").bounding_box()["width"] > 200
        context.close()


def test_the_page_asks_for_the_token_once_and_keeps_it_for_the_tab(indexed, page):
    with Served(indexed, "--token", "page-token") as served:
        page.goto(served.url + "/?q=printer+offline")
        page.wait_for_selector("#token:not([hidden])")
        assert page.locator("#results li").count() == 0
        page.locator("#token-input").fill("page-token")
        page.keyboard.press("Enter")
        assert titles(page)[0].startswith("Printer Shows Offline")
        page.reload()  # the same tab: the token is kept
        assert titles(page)[0].startswith("Printer Shows Offline")
        assert page.locator("#token").is_hidden()
