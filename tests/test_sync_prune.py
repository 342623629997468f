"""Pruning only on positive evidence (issue 14, section 1).

A page or file leaves the index only when its source says it is gone: a 404/410, a soft 404, a
file that is no longer there, a crawl or walk that saw everything and did not see it. A sitemap,
a listing page or a subfolder that could not be read says nothing about the pages it holds: the
run reports it and keeps them. Real parts: the fixture HTTP server, a real store on tmp_path.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from kbindex.crawl import Crawler, CrawlOptions, CrawlResult, iter_sitemap, says_not_found
from kbindex.errors import SkipSource
from kbindex.fetch import Fetcher
from kbindex.records import Page
from tests.server import FixtureServer, Request, Response
from tests.sync_helpers import assert_consistent, snapshot

FIXTURE = Path(__file__).parent / "fixtures" / "sitemap-child-fail"
FAST = ("--delay", "0", "--retries", "0")
XML = {"Content-Type": "application/xml"}
HTML = {"Content-Type": "text/html; charset=utf-8"}


def case_site() -> FixtureServer:
    """The files of case 05 (a sitemap index naming two sitemaps, three articles), served."""
    server = FixtureServer()
    for path in sorted((FIXTURE / "kb").iterdir()):
        body = path.read_bytes().replace(b"{{ORIGIN}}", server.base.encode())
        server.routes[f"/kb/{path.name}"] = Response(body=body, headers=XML if path.suffix == ".xml" else HTML)
    return server


def index(kb, *args) -> tuple[int, dict]:
    out = kb("index", *args, "--json")
    return out.exit_code, json.loads(out.stdout)


def sources(kb) -> set[str]:
    return {s["source"] for s in kb.json("sources")}


# -- case 05: a child sitemap answers 503 on the second run ---------------------------------------


def test_case_05_a_child_sitemap_that_fails_prunes_nothing(kb, db):
    routes = json.loads((FIXTURE / "routes.json").read_text())
    with case_site() as site:
        start = site.url("/kb/sitemap.xml")
        code, first = index(kb, start, "--delay", "0")
        assert code == 0 and first["indexed"] == 3
        for path, route in routes.items():  # the route switch of the case's second run
            site.routes[path] = Response(route["status"], route["body"].encode(), route["headers"])
        site.log.clear()
        code, again = index(kb, start, "--delay", "0")
        tries = [r.status for r in site.log if r.path == "/kb/sitemap-b.xml"]
    assert tries == [503, 503, 503]  # retried, as before
    assert again["pruned"] == 0 and again["chunks_deleted"] == 0
    assert sources(kb) == {site.url(f"/kb/{n}.html") for n in ("printer", "vpn", "mail")}
    assert again["crawls"][0]["complete"] is False
    assert again["crawls"][0]["stopped"] == "sitemap_failed"
    assert code == 1
    (failure,) = again["failures"]
    assert failure["source"] == site.url("/kb/sitemap-b.xml") and failure["kind"] == "http_503"
    assert "503" in failure["reason"]
    # pages that answer 404 are still pruned on their own evidence: only absence proves nothing
    assert "no page is pruned for being missing from it" in failure["reason"]
    assert_consistent(db)


def _timeout(request: Request) -> Response:
    return Response(body=b"<urlset></urlset>", headers=XML, delay=1.5)


def _truncated_gzip() -> Response:
    body = gzip.compress(b'<?xml version="1.0"?><urlset>' + b"<url><loc>/kb/x</loc></url>" * 2000 + b"</urlset>")
    return Response(body=body[: len(body) // 2], headers={"Content-Type": "application/gzip"})


@pytest.mark.parametrize("answer,kind", [
    (Response(500, b"oops"), "http_500"),
    (Response(502, b"bad gateway"), "http_502"),
    (Response(429, b"slow down"), "http_429"),
    (_timeout, "timeout"),
    (_truncated_gzip(), "truncated"),  # the gzip stream ends early
    (Response(200, b"<html><body>maintenance</body></html>", HTML), "not_sitemap"),
    (Response(403, b"forbidden"), "http_403"),
])
@pytest.mark.parametrize("which", ["/kb/sitemap-a.xml", "/kb/sitemap.xml"])  # a child, the start
def test_any_sitemap_that_cannot_be_read_prunes_nothing(kb, db, answer, kind, which):
    with case_site() as site:
        start = site.url("/kb/sitemap.xml")
        assert index(kb, start, *FAST)[1]["indexed"] == 3
        site.routes[which] = answer
        code, again = index(kb, start, *FAST, "--timeout", "0.5")
    assert code == 1 and again["pruned"] == 0 and again["chunks_deleted"] == 0
    assert [(f["source"], f["kind"]) for f in again["failures"]] == [(site.url(which), kind)]
    assert again["crawls"][0]["complete"] is False
    assert site.url("/kb/printer.html") in sources(kb)


@pytest.mark.parametrize("body", [
    b"\x1f\x8b garbage",  # corrupt gzip data
    b"<urlset><url><loc>{origin}/kb/vpn.html</loc></url><url><loc>",  # the XML is cut short
])
def test_a_sitemap_start_url_that_fails_to_parse_prunes_nothing(kb, db, body):
    with case_site() as site:
        start = site.url("/kb/sitemap-b.xml")
        assert index(kb, start, *FAST)[1]["indexed"] == 2
        site.routes["/kb/sitemap-b.xml"] = Response(
            body=body.replace(b"{origin}", site.base.encode()), headers=XML)
        code, again = index(kb, start, *FAST)
    assert code == 1 and again["pruned"] == 0 and again["crawls"][0]["complete"] is False
    assert len(sources(kb)) == 2


def test_a_sitemap_that_is_gone_is_reported_and_its_absent_pages_pruned(kb, db):
    """404 is the site's answer that the list no longer exists (the decision documented in the
    README): the crawl completes, and pages nothing lists any more are pruned."""
    with case_site() as site:
        start = site.url("/kb/sitemap.xml")
        index(kb, start, *FAST)
        del site.routes["/kb/sitemap-b.xml"]
        code, again = index(kb, start, *FAST)
    assert code == 0 and again["crawls"][0]["complete"] is True
    assert [(s["source"], s["kind"]) for s in again["skips"]] == [(site.url("/kb/sitemap-b.xml"), "sitemap_gone")]
    assert again["pruned"] == 2 and sources(kb) == {site.url("/kb/printer.html")}


def _page(title: str, text: str) -> bytes:
    return (f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>{text}</p>"
            "</main></body></html>").encode()


def _links(*paths: str) -> bytes:
    items = "".join(f'<h2><a href="{p}">Article {p}</a></h2>' for p in paths)  # a listing page
    return f"<html><head><title>Index</title></head><body><main>{items}</main></body></html>".encode()


def test_a_sitemap_named_in_robots_txt_that_fails_prunes_nothing(kb, db):
    server = FixtureServer({
        "/kb/": Response(body=_links("/kb/a")),
        "/kb/a": Response(body=_page("Alpha", "Reset the router, then wait two minutes.")),
        "/kb/orphan": Response(body=_page("Orphan", "Only the sitemap lists this article.")),
    })
    with server:
        server.routes["/robots.txt"] = Response(body=f"Sitemap: {server.url('/kb/map.xml')}\n".encode(),
                                                headers={"Content-Type": "text/plain"})
        server.routes["/kb/map.xml"] = Response(body=(
            f"<urlset><url><loc>{server.url('/kb/orphan')}</loc></url></urlset>").encode(), headers=XML)
        code, first = index(kb, server.url("/kb/"), *FAST)
        assert code == 0 and first["indexed"] == 2
        server.routes["/kb/map.xml"] = Response(504, b"gateway timeout")
        code, again = index(kb, server.url("/kb/"), *FAST)
    assert code == 1 and again["pruned"] == 0
    assert again["failures"][0]["source"] == server.url("/kb/map.xml")
    assert server.url("/kb/orphan") in sources(kb)


def test_a_listing_page_that_fails_prunes_nothing(kb, db):
    server = FixtureServer({
        "/kb/": Response(body=_links("/kb/a", "/kb/more")),
        "/kb/a": Response(body=_page("Alpha", "Reset the router, then wait two minutes.")),
        "/kb/more": Response(body=_links("/kb/b", "/kb/c")),
        "/kb/b": Response(body=_page("Beta", "Check the cable between the modem and the wall.")),
        "/kb/c": Response(body=_page("Gamma", "Call the provider when the light stays red.")),
    })
    with server:
        assert index(kb, server.url("/kb/"), *FAST)[1]["indexed"] == 3
        server.routes["/kb/more"] = Response(503, b"busy")
        code, again = index(kb, server.url("/kb/"), *FAST)
    assert code == 1 and again["pruned"] == 0 and again["crawls"][0]["stopped"] == "errors"
    assert len(sources(kb)) == 3


# -- a page that is gone: pruned, and that is success ---------------------------------------------


def test_an_indexed_page_that_answers_410_is_pruned_and_the_run_succeeds(kb, db):
    with case_site() as site:
        start = site.url("/kb/sitemap.xml")
        index(kb, start, *FAST)
        site.routes["/kb/vpn.html"] = Response(410, b"gone")
        code, again = index(kb, start, *FAST)
        assert code == 0 and again["failed"] == 0 and again["pruned"] == 1
        assert again["prunes"] == [{"source": site.url("/kb/vpn.html"), "reason": "HTTP 410 Gone",
                                    "kind": "http_410"}]
        # A link to a page never indexed that answers 404 stays that page's failure.
        site.routes["/kb/sitemap-a.xml"] = Response(body=(
            f"<urlset><url><loc>{site.url('/kb/printer.html')}</loc></url>"
            f"<url><loc>{site.url('/kb/new.html')}</loc></url></urlset>").encode(), headers=XML)
        code, third = index(kb, start, *FAST)
    # vpn.html, still listed and no longer indexed, is now such a page too.
    assert code == 1 and third["failed_by"] == {"http_404": 1, "http_410": 1} and third["pruned"] == 0


# -- soft 404s ------------------------------------------------------------------------------------

NOT_FOUND = (b"<html><head><title>Page not found | Helpdesk</title></head><body><nav><a href='/'>Home</a>"
             b"</nav><main><h1>Oops!</h1><p>We can't find that page. Try the search box above.</p>"
             b"</main></body></html>")


class CatchAll(dict):
    """Routes where every unknown path answers 200 with the site's generic page (no 404 at all)."""

    def __init__(self, routes, generic: bytes):
        super().__init__(routes)
        self.generic = generic

    def get(self, path, default=None):
        return super().get(path) or Response(body=self.generic)


GENERIC = _page("Helpdesk", "Search our knowledge base or browse the topics.")


@pytest.mark.parametrize("soft", ["message", "generic"])
def test_an_indexed_page_that_became_a_soft_404_is_pruned(kb, db, soft):
    with case_site() as site:
        if soft == "generic":  # the made-up kind: no message, the text every unknown URL gets
            site.routes = CatchAll(site.routes, GENERIC)
        start = site.url("/kb/sitemap.xml")
        code, first = index(kb, start, *FAST)
        assert code == 0 and first["indexed"] == 3
        probes = [r.path for r in site.log if "kbindex-probe-" in r.path]
        assert len(probes) == 1  # one probe per host and crawl (the pages are short)
        before = snapshot(db)["store"][site.url("/kb/mail.html")]
        site.routes["/kb/mail.html"] = Response(body=NOT_FOUND if soft == "message" else GENERIC)
        site.log.clear()
        code, again = index(kb, start, *FAST)
        probes = [r.path for r in site.log if "kbindex-probe-" in r.path]
    assert code == 0 and again["failed"] == 0
    assert again["pruned"] == 1 and again["prunes"][0]["kind"] == "soft_404"
    assert again["prunes"][0]["source"] == site.url("/kb/mail.html")
    assert before and site.url("/kb/mail.html") not in assert_consistent(db)["store"]
    assert len(probes) <= 1


def test_a_never_indexed_soft_404_is_skipped_and_a_real_page_is_not(kb, db):
    with case_site() as site:
        site.routes = CatchAll(site.routes, GENERIC)
        site.routes["/kb/sitemap-a.xml"] = Response(body=(
            f"<urlset><url><loc>{site.url('/kb/printer.html')}</loc></url>"
            f"<url><loc>{site.url('/kb/removed.html')}</loc></url></urlset>").encode(), headers=XML)
        code, result = index(kb, site.url("/kb/sitemap.xml"), *FAST)
    assert code == 0 and result["indexed"] == 3
    assert [(s["source"], s["kind"]) for s in result["skips"]] == [(site.url("/kb/removed.html"), "soft_404")]


@pytest.mark.parametrize("title,heading,text,expected", [
    ("Page not found | Acme KB", "", "", True),
    ("Acme – 404 Not Found", "", "", True),
    ("Error 404", "", "", True),
    ("Seite nicht gefunden", "", "", True),
    ("Acme", "Oops! That page can’t be found.", "", True),
    ("Acme", "", "Sorry, the page you are looking for does not exist. Try the search.", True),
    ("Acme", "", "We couldn't find that page. Go back home.", True),
    # Articles about errors are not "not found" pages.
    ("Printer not found on the network", "", "", False),
    ("Fix 404 errors in IIS", "", "", False),
    ("Error 404 when opening SharePoint", "", "", False),
    ("Missing files after sync", "", "", False),
    ("Oops", "", "", False),
    ("Printer shows Offline", "", "Reinstall the driver. If the page is not found later, clear the cache "
     "of the browser and the proxy, then sign in again to the print portal.", False),
])
def test_says_not_found(title, heading, text, expected):
    assert says_not_found(title, heading, text) is expected


@pytest.mark.parametrize("title", [
    "Страница не найдена", "Página no encontrada", "Pagina non trovata", "Pagina niet gevonden",
    "Page introuvable", "Page non trouvée", "Seite nicht gefunden", "Página não encontrada",
    "Nie znaleziono strony",
    # made-up: word order, case, punctuation, an error number and the site's name around it
    "Ошибка 404. Страница не найдена!", "404 – Seite nicht gefunden | Acme", "Erreur 404 : page introuvable",
    "Acme · La página no existe", "STRONA NIE ZOSTAŁA ZNALEZIONA", "Pagina niet gevonden?",
    "Página não encontrada - Suporte", "Seite wurde nicht gefunden",
])
def test_not_found_titles_in_other_languages(title):
    assert says_not_found(title, "", "")
    if not any(sep in title for sep in ("|", " - ", "·")):  # a heading has no site name to split off
        assert says_not_found("Acme", title, "")


@pytest.mark.parametrize("text", [
    "Die Seite, die Sie suchen, wurde nicht gefunden. Zur Startseite.",
    "La page que vous cherchez est introuvable. Retour à l'accueil.",
    "Lo sentimos, la página que busca no existe.",
    "Запрошенная страница не найдена. Вернитесь на главную.",
])
def test_not_found_openings_in_other_languages(text):
    assert says_not_found("Acme", "", text)


@pytest.mark.parametrize("title,heading,text", [
    ("Drukarka nie znaleziona w sieci", "", ""),  # a printer, not the page, is not found
    ("Seite einrichten", "", ""),
    ("Fix “File not found” errors in Explorer", "", ""),
    ("Acme", "", "Word says “The document could not be found” when you open a file from a share."),
    ("Acme", "", "Outlook zeigt „Die Seite wurde nicht gefunden“ beim Öffnen eines Links an."),
])
def test_articles_about_not_found_errors_are_not_soft_404s(title, heading, text):
    assert not says_not_found(title, heading, text)


def test_a_short_article_about_file_not_found_errors_stays_indexed(kb, db):
    """Made-up: a short article whose title names the error it is about, and whose opening
    quotes the message, is an article, not a "not found" page."""
    body = _page("Fix “File not found” errors in Explorer",
                 "Word says “The document could not be found” when a file on a share was moved. "
                 "Map the share again and open the file from its new folder.")
    with FixtureServer({"/kb/": Response(body=_links("/kb/fnf")), "/kb/fnf": Response(body=body)}) as server:
        code, out = index(kb, server.url("/kb/"), *FAST)
    assert code == 0 and out["indexed"] == 1 and not any(s["kind"] == "soft_404" for s in out["skips"]), out["skips"]
    assert server.url("/kb/fnf") in sources(kb)


def test_a_long_page_titled_in_another_language_as_not_found_is_an_article():
    long_text = " ".join(f"wort{i}" for i in range(200))
    server = FixtureServer({"/kb/": Response(body=_links("/kb/a")),
                            "/kb/a": Response(body=_page("Seite nicht gefunden", long_text))})
    with server, Fetcher(timeout=2, retries=0) as fetcher:
        result = CrawlResult(server.url("/kb/"))
        items = list(Crawler(fetcher, CrawlOptions()).crawl(server.url("/kb/"), result))
    assert [i.source for i in items if isinstance(i, Page)] == [server.url("/kb/a")]


def test_a_short_page_titled_in_another_language_as_not_found_is_a_soft_404(kb, db):
    server = FixtureServer({"/kb/": Response(body=_links("/kb/a", "/kb/b")),
                            "/kb/a": Response(body=_page("Página no encontrada", "Vuelva al inicio.")),
                            "/kb/b": Response(body=_page("Impresora", "Reinicie la cola de impresión."))})
    with server:
        code, out = index(kb, server.url("/kb/"), *FAST)
    assert code == 0 and [(s["source"], s["kind"]) for s in out["skips"] if s["kind"] == "soft_404"] == [
        (server.url("/kb/a"), "soft_404")]
    assert sources(kb) == {server.url("/kb/b")}


def test_probe_is_asked_once_per_host_and_only_for_short_pages():
    long_text = " ".join(f"word{i}" for i in range(200))
    server = FixtureServer({
        "/kb/": Response(body=_links("/kb/a", "/kb/b", "/kb/c")),
        "/kb/a": Response(body=_page("Alpha", long_text)),
        "/kb/b": Response(body=_page("Beta", "Short.")),
        "/kb/c": Response(body=_page("Gamma", "Short too.")),
    })
    with server, Fetcher(timeout=2, retries=0) as fetcher:
        result = CrawlResult(server.url("/kb/"))
        list(Crawler(fetcher, CrawlOptions()).crawl(server.url("/kb/"), result))
        probes = [r for r in server.log if "kbindex-probe-" in r.path]
    assert len(probes) == 1 and probes[0].path.startswith("/kb/") and probes[0].status == 404


# -- folders: unreadable subfolders, files deleted meanwhile, symbolic links -----------------------


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "top.md").write_text("# Top\n\nThe router needs a reset after the update.\n")
    (root / "sub" / "deep.md").write_text("# Deep\n\nThe printer queue must be cleared by hand.\n")
    (root / "sub" / "deeper.md").write_text("# Deeper\n\nThe VPN needs UDP 500 and 4500 open.\n")
    return root.resolve()


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(5, "Input/output error")])
def test_an_unreadable_subfolder_prunes_nothing_under_it(kb, db, tmp_path, monkeypatch, error):
    """The fault is injected: tests run as root, whom chmod 000 does not stop, so os.scandir is
    made to fail for that one folder, as it does for a user without the permission."""
    import kbindex.files

    root = _folder(tmp_path)
    assert kb.json("index", str(root))["indexed"] == 3
    (root / "top.md").unlink()  # a real deletion beside it: still pruned
    real = os.scandir

    def scandir(path):
        if Path(path) == root / "sub":
            raise type(error)(*error.args)
        return real(path)

    monkeypatch.setattr(kbindex.files.os, "scandir", scandir)
    code, again = index(kb, str(root))
    assert code == 1
    assert again["pruned"] == 1 and again["prunes"][0]["source"] == str(root / "top.md")
    (failure,) = again["failures"]
    assert failure["source"] == str(root / "sub") and "nothing under it is pruned" in failure["reason"]
    assert failure["kind"] == ("permission" if isinstance(error, PermissionError) else "os_error")
    assert sources(kb) == {str(root / "sub" / "deep.md"), str(root / "sub" / "deeper.md")}
    monkeypatch.setattr(kbindex.files.os, "scandir", real)
    (root / "sub" / "deeper.md").unlink()
    code, healed = index(kb, str(root))
    assert code == 0 and healed["pruned"] == 1 and sources(kb) == {str(root / "sub" / "deep.md")}


def test_a_file_deleted_between_listing_and_reading_is_pruned_as_success(kb, db, tmp_path, monkeypatch):
    import kbindex.indexing.sources

    root = _folder(tmp_path)
    kb("index", str(root))
    (root / "sub" / "deep.md").write_text("# Deep\n\nChanged, so it must be read again.\n")
    real = kbindex.indexing.sources.read_file

    def read_after_deletion(path, *args):
        if path.name == "deep.md":
            path.unlink()  # deleted after the walk listed it, before it is read
        return real(path, *args)

    monkeypatch.setattr(kbindex.indexing.sources, "read_file", read_after_deletion)
    code, again = index(kb, str(root))
    assert code == 0 and again["failed"] == 0 and again["pruned"] == 1
    assert again["prunes"][0]["source"] == str(root / "sub" / "deep.md")


def test_links_out_of_the_folder_are_skipped_unless_followed(kb, db, tmp_path):
    root = _folder(tmp_path)
    outside = tmp_path / "elsewhere"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.md").write_text("# Secret\n\nNot part of the knowledge base.\n")
    (outside / "more" / "linked.md").write_text("# Linked\n\nA folder reached through a link.\n")
    (outside / "more" / "loop").symlink_to(outside)  # a loop back up: walked once
    (root / "secret.md").symlink_to(outside / "secret.md")
    (root / "more").symlink_to(outside / "more")
    (root / "same.md").symlink_to(root / "top.md")  # inside: read once, under its target
    code, plain = index(kb, str(root))
    assert code == 0 and plain["indexed"] == 3
    assert sorted((s["source"], s["kind"]) for s in plain["skips"]) == [
        (str(root / "more"), "outside_folder"), (str(root / "secret.md"), "outside_folder")]
    code, followed = index(kb, str(root), "--follow-links")
    assert code == 0 and followed["indexed"] == 2
    # Named under the links; "elsewhere" once more through the loop, its folder "more" not again.
    assert sources(kb) - {str(root / n) for n in ("top.md", "sub/deep.md", "sub/deeper.md")} == {
        str(root / "secret.md"), str(root / "more" / "linked.md")}
    assert [(s["source"], s["kind"]) for s in followed["skips"]] == [
        (str(root / "more" / "loop" / "secret.md"), "duplicate")]
    # The links indexed that way go on the next run without --follow-links.
    code, again = index(kb, str(root))
    assert code == 0 and again["pruned"] == 2
    assert sources(kb) == {str(root / n) for n in ("top.md", "sub/deep.md", "sub/deeper.md")}
    assert_consistent(db)


# -- sitemaps are streamed and stop at the page budget (issue 15, hostile input) -------------------


def _many_gzipped_children(server: FixtureServer, children: int, urls: int) -> None:
    index = "".join(f"<sitemap><loc>{server.url(f'/maps/{i}.xml.gz')}</loc></sitemap>" for i in range(children))
    server.routes["/sitemap.xml"] = Response(body=f"<sitemapindex>{index}</sitemapindex>".encode(), headers=XML)
    for i in range(children):
        entries = "".join(f"<url><loc>{server.url(f'/p/{i}/{j}')}</loc></url>" for j in range(urls))
        server.routes[f"/maps/{i}.xml.gz"] = Response(
            body=gzip.compress(f"<urlset>{entries}</urlset>".encode()),
            headers={"Content-Type": "application/gzip"})


def test_a_sitemap_index_of_many_gzipped_children_stops_at_the_page_budget():
    server = FixtureServer()
    _many_gzipped_children(server, children=200, urls=2000)
    with server, Fetcher(timeout=5, retries=0) as fetcher:
        result = CrawlResult(server.url("/sitemap.xml"))
        items = list(Crawler(fetcher, CrawlOptions(max_pages=3)).crawl(server.url("/sitemap.xml"), result))
        maps = [r.path for r in server.log if r.path.startswith(("/maps/", "/sitemap"))]
        pages = [r.path for r in server.log if r.path.startswith("/p/")]
    assert maps == ["/sitemap.xml", "/maps/0.xml.gz"]
    assert len(pages) == 3 and len(items) == 3
    assert result.complete is False and result.stopped == "max_pages"


def test_the_page_budget_spans_several_small_children():
    server = FixtureServer()
    _many_gzipped_children(server, children=50, urls=2)
    with server, Fetcher(timeout=5, retries=0) as fetcher:
        result = CrawlResult(server.url("/sitemap.xml"))
        list(Crawler(fetcher, CrawlOptions(max_pages=5)).crawl(server.url("/sitemap.xml"), result))
        maps = [r.path for r in server.log if r.path.startswith("/maps/")]
    assert maps == ["/maps/0.xml.gz", "/maps/1.xml.gz", "/maps/2.xml.gz"]  # 6 entries > 5
    assert result.stopped == "max_pages"


def test_iter_sitemap_reads_only_as_far_as_it_is_asked():
    """Streamed: the first entries come out before the body's damaged end is even decompressed."""
    entries = "".join(f"<url><loc>https://x.example/{j}</loc></url>" for j in range(50_000))
    body = gzip.compress(f"<urlset>{entries}</urlset>".encode())
    damaged = body[:-5000] + bytes(5000)
    it = iter_sitemap(damaged, 100_000_000)
    assert [next(it)[1] for _ in range(3)] == [f"https://x.example/{j}" for j in range(3)]
    with pytest.raises(SkipSource) as err:
        list(it)
    assert err.value.kind in ("decoding", "truncated")


def test_follow_links_from_the_config_file(kb, db, tmp_path, monkeypatch):
    root = _folder(tmp_path)
    (tmp_path / "outside.md").write_text("# Outside\n\nReached through a link in the folder.\n")
    (root / "outside.md").symlink_to(tmp_path / "outside.md")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kbindex.toml").write_text(
        '[[collections.kbindex.sources]]\npath = "kb"\nfollow_links = true\n')
    code, result = index(kb)
    assert code == 0 and result["indexed"] == 4 and result["skips"] == []
    assert str(root / "outside.md") in sources(kb)


def test_a_link_indexed_under_its_target_by_an_older_version_is_pruned(kb, db, tmp_path, monkeypatch):
    """kbindex 0.1.0 followed a link to a file outside the folder and named it by its target
    (outside the folder, root the folder): that walk is replayed here, then a current run prunes it."""
    import kbindex.indexing.sources

    root = _folder(tmp_path)
    target = tmp_path / "outside.md"
    target.write_text("# Outside\n\nReached through a link in the folder.\n")
    (root / "outside.md").symlink_to(target)
    current = kbindex.indexing.sources.walk

    def old_walk(folder, follow_links=False):
        for item in current(folder, follow_links=follow_links):
            yield target if getattr(item, "kind", None) == "outside_folder" else item

    monkeypatch.setattr(kbindex.indexing.sources, "walk", old_walk)
    assert index(kb, str(root))[1]["indexed"] == 4 and str(target) in sources(kb)
    monkeypatch.setattr(kbindex.indexing.sources, "walk", current)
    code, again = index(kb, str(root))
    assert code == 0 and [p["source"] for p in again["prunes"]] == [str(target)]
    assert str(target) not in sources(kb)
