"""Fixture sites for the crawler tests, served by tests.server.FixtureServer.

- `blog`: Blogger-style: a home page and monthly archives listing posts, label pages under /search
  (disallowed by robots.txt, as Blogger does), an endless calendar, a sitemap that also names an old
  post linked from nowhere else, an Atom feed, page chrome (sidebar widgets, comments).
- `docs`: a documentation site with a table of contents under /docs/, a page outside that folder,
  a redirect, a duplicate page, non-HTML links, a gzip bomb and a slow page.
- `from_routes` / `from_folder`: a reproduction case's site (tests/fixtures/...), served as the
  case's serve.py serves it.
"""

from __future__ import annotations

import gzip
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from tests.server import FixtureServer, Request, Response

HTML = {"Content-Type": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class Post:
    path: str
    title: str
    labels: tuple[str, ...]
    paragraphs: tuple[str, ...]
    question: str  # a paraphrase that should find this post first


POSTS = (
    Post("/2026/11/printer-shows-offline.html", "Printer shows Offline in Windows 11", ("Windows", "Printers"), (
        "After the November update many users saw their network printer listed as Offline even though "
        "it answered ping. The print spooler queued every job and nothing came out of the tray.",
        "The cause is the SNMP status check in the standard TCP/IP port monitor: the printer does not "
        "answer SNMP community public, so Windows marks it offline. Open Printer properties, Ports, "
        "Configure Port and clear SNMP Status Enabled, then restart the Print Spooler service.",
    ), "network printer appears offline though it responds to ping"),
    Post("/2026/11/outlook-stuck-working-offline.html", "Outlook stuck in Working Offline", ("Office",), (
        "Outlook showed Working Offline in the status bar and the Send/Receive button did nothing. "
        "Toggling the Work Offline button on the Send / Receive tab was greyed out.",
        "Deleting the corrupted OST cache file and letting Outlook rebuild it from the mailbox fixed "
        "it. Close Outlook, rename the .ost file under AppData Local Microsoft Outlook and reopen.",
    ), "mail client will not leave offline mode, rebuild the cache file"),
    Post("/2026/10/vpn-disconnects-every-hour.html", "VPN disconnects every hour", ("Network",), (
        "Remote staff reported that the IPsec VPN tunnel dropped exactly sixty minutes after connecting "
        "and then reconnected on its own a minute later, killing long file copies.",
        "The IKE phase 1 lifetime on the firewall was 3600 seconds while the clients expected 28800, "
        "so the rekey failed. Align the lifetimes on both sides and the tunnel stays up.",
    ), "remote access tunnel drops after sixty minutes because of rekey lifetime"),
    Post("/2026/10/bitlocker-recovery-after-bios-update.html", "BitLocker asks for the recovery key after a BIOS update",
         ("Windows", "Security"), (
        "Laptops that received the firmware update booted to the blue BitLocker recovery screen asking "
        "for the 48-digit recovery key.",
        "The TPM measured the new firmware and the PCR values no longer matched. Suspend BitLocker "
        "protection before flashing the BIOS, and resume it after the first successful boot.",
    ), "disk encryption wants the recovery code after a firmware upgrade"),
    Post("/2026/09/teams-camera-not-detected.html", "Teams does not detect the camera", ("Office",), (
        "In meetings the camera preview stayed black and the device list said no camera was found, "
        "although the Camera app worked a moment before.",
        "Windows privacy settings blocked desktop apps from using the camera. Turn on Let desktop apps "
        "access your camera under Settings, Privacy and security, Camera, then restart Teams.",
    ), "video meetings cannot see my webcam, privacy setting blocks desktop apps"),
)
# Linked from nowhere: only the sitemap names it.
OLD_POST = Post("/2025/12/show-saved-wifi-password.html", "Show a saved Wi-Fi password", ("Network",), (
    "A visitor needed the guest wireless password and nobody remembered it, but one laptop was "
    "still connected to that network.",
    "Run netsh wlan show profile name=Guest key=clear in a command prompt and read the Key Content "
    "line. The same is visible in the adapter's Wireless Properties under Security, Show characters.",
), "how to reveal the stored wireless network key on a laptop")
ALL_POSTS = POSTS + (OLD_POST,)
MONTHS = ("2026/11", "2026/10", "2026/09")


def _sidebar() -> str:
    archive = "".join(f'<li><a href="/{m}/">{m}</a></li>' for m in MONTHS)
    labels = "".join(f'<li><a href="/search/label/{name}">{name}</a></li>'
                     for name in ("Windows", "Office", "Network"))
    popular = "".join(f'<li><h3><a href="{p.path}">{p.title}</a></h3></li>' for p in POSTS[:3])
    return (
        '<aside class="sidebar">'
        f'<div class="widget BlogArchive"><h2>Blog archive</h2><ul>{archive}</ul></div>'
        f'<div class="widget Label"><h2>Labels</h2><ul>{labels}</ul></div>'
        f'<div class="widget PopularPosts"><h2>Popular posts</h2><ul>{popular}</ul></div>'
        '<div class="widget Calendar"><a href="/calendar/2026/11/">Calendar</a></div>'
        '<a href="https://www.blogger.com/">Powered by Blogger</a>'
        '<a href="/feeds/posts/default">Posts (Atom)</a>'
        '<img src="/img/logo.png"><a href="/img/logo.png">logo</a>'
        '</aside>'
    )


def _page(title: str, main: str, head: str = "") -> bytes:
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title} | Helpdesk Notes"
        f"</title>{head}</head><body><header><h1 class='blog-title'><a href='/'>Helpdesk Notes</a></h1>"
        f"</header><div id='main'>{main}</div>{_sidebar()}"
        "<footer>&copy; 2026 Helpdesk Notes</footer></body></html>"
    ).encode()


def _snippet(post: Post, link_suffix: str = "") -> str:
    return (
        f'<article class="post"><h2 class="post-title"><a href="{post.path}{link_suffix}">{post.title}</a></h2>'
        f"<p>{post.paragraphs[0]}</p><a href=\"{post.path}#more\">Read more</a></article>"
    )


def _post_page(post: Post, base: str, newer: Post | None, older: Post | None) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in post.paragraphs)
    labels = ", ".join(f'<a href="/search/label/{name}">{name}</a>' for name in post.labels)
    pager = "".join(
        f'<a href="{p.path}">{word} Post</a> ' for p, word in ((newer, "Newer"), (older, "Older")) if p
    )
    main = (
        f'<article class="post"><h1 class="post-title"><a href="{post.path}">{post.title}</a></h1>'
        f'<div class="post-body">{body}</div><div class="post-footer">Labels: {labels}</div></article>'
        f'<div class="blog-pager">{pager}<a href="/">Home</a></div>'
        '<div id="comments"><h4>2 comments</h4><p>Thanks, this saved my weekend!</p></div>'
    )
    head = f'<link rel="canonical" href="{base}{post.path}">'
    return _page(post.title, main, head)


def _calendar(request: Request) -> Response:
    match = re.fullmatch(r"/calendar/(\d+)/(\d+)/", request.path)
    if not match:
        return Response(404, b"<h1>Not found</h1>")
    year, month = int(match.group(1)), int(match.group(2))
    prev = (year, month - 1) if month > 1 else (year - 1, 12)
    nxt = (year, month + 1) if month < 12 else (year + 1, 1)
    main = (
        f"<h2>Posts in {year}-{month:02d}</h2><p>No posts this month.</p>"
        f'<a href="/calendar/{prev[0]}/{prev[1]:02d}/">Previous month</a> '
        f'<a href="/calendar/{nxt[0]}/{nxt[1]:02d}/">Next month</a>'
    )
    return Response(body=_page("Calendar", main))


class DynamicRoutes(dict):
    """Exact routes first, then prefix handlers (for endless pages)."""

    def __init__(self, routes, prefixes):
        super().__init__(routes)
        self.prefixes = prefixes

    def get(self, path, default=None):
        if path in self:
            return self[path]
        page, _, query = path.partition("?")
        if query and page in self and all(p.startswith("utm_") for p in query.split("&")):
            return self[page]  # as real servers do, tracking parameters are ignored
        for prefix, handler in self.prefixes.items():
            if path.startswith(prefix):
                return handler
        return default


def blog(robots: str | None = None, validators: str | None = None) -> FixtureServer:
    """The Blogger-style site; start it with `with blog() as server:`. validators: see
    FixtureServer (None: the server sends no ETag or Last-Modified)."""
    server = FixtureServer(validators=validators)
    base = server.base
    routes: dict = {}
    routes["/robots.txt"] = Response(
        body=(robots if robots is not None else
              f"User-agent: *\nDisallow: /search\nAllow: /\n\nSitemap: {base}/sitemap.xml\n").encode(),
        headers={"Content-Type": "text/plain"},
    )
    home = "".join(_snippet(p, "?utm_source=home&utm_medium=web") for p in POSTS[:3])
    home += '<div class="blog-pager"><a href="/search?updated-max=2026-10-01&max-results=3">Older posts</a></div>'
    routes["/"] = Response(body=_page("Home", home))
    for month in MONTHS:
        listed = "".join(_snippet(p) for p in POSTS if p.path.startswith(f"/{month}/"))
        routes[f"/{month}/"] = Response(body=_page(f"Archive {month}", listed))
    for i, post in enumerate(ALL_POSTS):
        newer = ALL_POSTS[i - 1] if i > 0 else None
        older = ALL_POSTS[i + 1] if i + 1 < len(POSTS) else None
        routes[post.path] = Response(body=_post_page(post, base, newer, older))
    for name in ("Windows", "Office", "Network"):
        listed = "".join(_snippet(p) for p in POSTS if name in p.labels)
        routes[f"/search/label/{name}"] = Response(body=_page(name, listed))
    server.lastmods = {}  # path -> <lastmod> the sitemap gives it (none by default)

    def sitemap(request: Request) -> Response:
        urls = "".join(
            f"<url><loc>{base}{p.path}</loc>"
            + (f"<lastmod>{server.lastmods[p.path]}</lastmod>" if p.path in server.lastmods else "")
            + "</url>" for p in ALL_POSTS)
        return Response(
            body=f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'.encode(),
            headers={"Content-Type": "application/xml"},
        )

    routes["/sitemap.xml"] = sitemap
    entries = "".join(
        f"<entry><title>{p.title}</title><link rel='alternate' type='text/html' href='{base}{p.path}'/>"
        f"<id>{base}{p.path}</id><updated>2026-11-01T00:00:00Z</updated></entry>" for p in POSTS
    )
    routes["/feeds/posts/default"] = Response(
        body=(f"<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
              f"<title>Helpdesk Notes</title><id>{base}/</id><updated>2026-11-01T00:00:00Z</updated>"
              f"{entries}</feed>").encode(),
        headers={"Content-Type": "application/atom+xml; charset=UTF-8"},
    )
    routes["/img/logo.png"] = Response(body=b"\x89PNG\r\n\x1a\n", headers={"Content-Type": "image/png"})
    server.routes = DynamicRoutes(routes, {"/calendar/": _calendar})
    return server


DOC_PAGES = {
    "/docs/install.html": ("Installing Widgetd", "Download the package and run the installer. Widgetd needs "
                           "a 64-bit system with two gigabytes of memory and listens on port 8080."),
    "/docs/configure.html": ("Configuring Widgetd", "Settings live in widgetd.conf. Set the storage path, "
                             "the log level and the list of allowed clients, then reload the service."),
    "/docs/guide/network.html": ("Network troubleshooting", "If clients cannot connect, check that the "
                                 "firewall allows port 8080 and that the bind address is not loopback."),
}


def _doc(title: str, text: str) -> bytes:
    nav = "".join(f'<li><a href="{path}">{t}</a></li>' for path, (t, _) in DOC_PAGES.items())
    words = " ".join([text] * 4)  # long enough to be an article
    return (
        f"<html><head><title>{title}</title></head><body><nav><ul>{nav}</ul></nav>"
        f"<main><h1>{title}</h1><p>{words}</p><p>Next: <a href='/docs/configure.html'>Configuring</a></p>"
        "</main></body></html>"
    ).encode()


def docs(slow_delay: float = 3.0, validators: str | None = None) -> FixtureServer:
    """The documentation site, under /docs/ (the start URL is /docs/index.html)."""
    toc = "".join(f'<li><a href="{path}">{title}</a></li>' for path, (title, _) in DOC_PAGES.items())
    toc += (
        '<li><a href="/docs/moved.html">Old configuration page</a></li>'
        '<li><a href="/docs/copy.html">Installing (copy)</a></li>'
        '<li><a href="/docs/api.json">API schema</a></li>'
        '<li><a href="/docs/changelog">Changelog</a></li>'
        '<li><a href="/docs/legacy">Legacy notes</a></li>'
        '<li><a href="/docs/report">Report</a></li>'
        '<li><a href="/docs/big.html">Big page</a></li>'
        '<li><a href="/docs/slow.html">Slow page</a></li>'
        '<li><a href="/other/page.html">Elsewhere on the host</a></li>'
        '<li><a href="mailto:docs@example.com">Mail us</a> <a href="javascript:void(0)">js</a></li>'
    )
    routes = {
        "/docs/index.html": Response(body=(
            f"<html><head><title>Widgetd documentation</title></head><body><main><h1>Widgetd</h1>"
            f"<ul>{toc}</ul></main></body></html>").encode()),
        "/docs/moved.html": Response(301, b"", {"Location": "/docs/configure.html"}),
        "/docs/copy.html": Response(body=_doc(*DOC_PAGES["/docs/install.html"])),
        "/docs/api.json": Response(body=b"{}", headers={"Content-Type": "application/json"}),
        "/docs/changelog": Response(body=b"1.0 first release\n", headers={"Content-Type": "text/plain"}),
        "/docs/legacy": Response(body=_doc("Legacy notes", "Version one stored settings in the registry "
                                           "instead of a file; migrate them with widgetd --import."),
                                 headers={}),
        "/docs/report": Response(body=b"%PDF-1.4 binary", headers={"Content-Type": "application/pdf"}),
        "/docs/big.html": Response(body=gzip.compress(b"<p>" + b"a" * 3_000_000),
                                   headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}),
        "/docs/slow.html": Response(body=_doc("Slow", "This page takes too long."), delay=slow_delay),
        "/other/page.html": Response(body=_doc("Other", "A page outside the docs folder.")),
    }
    for path, (title, text) in DOC_PAGES.items():
        routes[path] = Response(body=_doc(title, text))
    return FixtureServer(routes, validators=validators)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def from_routes(path: Path, robots: str = "User-agent: *\nAllow: /\n") -> FixtureServer:
    """A site from a reproduction case's routes.json ({path with its query: {"status", "headers",
    "body"}}), answered only on those exact paths and query strings, as applications that route
    on the raw query string do; {{ORIGIN}} in a body becomes the server's base URL."""
    server = FixtureServer()
    routes = {"/robots.txt": Response(body=robots.encode(), headers={"Content-Type": "text/plain"})}
    for route, spec in json.loads(path.read_text(encoding="utf-8")).items():
        body = spec.get("body", "").replace("{{ORIGIN}}", server.base).encode()
        routes[route] = Response(spec.get("status", 200), body, dict(spec.get("headers", {})))
    server.routes = routes
    return server


def from_folder(root: Path) -> FixtureServer:
    """A static site from a folder: each file under its path, a folder's index.html under the
    folder's path with a slash (and a redirect to it without); no robots.txt (404)."""
    server = FixtureServer()
    for file in sorted(root.rglob("*")):
        if not file.is_file():
            continue
        path = "/" + file.relative_to(root).as_posix()
        body = file.read_bytes().replace(b"{{ORIGIN}}", server.base.encode())
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        server.routes[path] = Response(body=body, headers={"Content-Type": kind})
        if file.name == "index.html":
            folder = path[: -len("index.html")]
            server.routes[folder] = server.routes[path]
            if folder != "/":
                server.routes[folder.rstrip("/")] = Response(301, b"", {"Location": folder})
    return server
