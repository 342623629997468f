"""A script-built KB for the rendering tests and benchmark: every page is an app shell whose
script fetches its article (or the list of articles) from a JSON endpoint and builds the DOM;
`plain=True` serves the same articles as ordinary HTML."""

from __future__ import annotations

import json

from tests.server import FixtureServer, Request, Response

TOPICS = ["printer offline", "vpn reconnects", "mail quota", "password reset", "wifi drops",
          "disk encryption", "calendar sharing", "badge access", "laptop docking", "teams audio"]

SHELL = (b"<!doctype html><html><head><title>Help centre</title>"
         b"<link rel='stylesheet' href='/static/site.css'>"
         b"<script src='/static/app.js' defer></script></head>"
         b"<body><div id='app'>Loading...</div>"
         b"<noscript>You need to enable JavaScript to run this app.</noscript></body></html>")

APP_JS = b"""
async function main() {
  const app = document.getElementById('app');
  const path = location.pathname;
  if (path.endsWith('/kb/') || path.endsWith('/kb/index.html')) {
    const list = await (await fetch('/api/articles.json')).json();
    app.innerHTML = '<h1>Help centre</h1><ul>' + list.map(
      a => '<li><a href="/kb/' + a.slug + '.html">' + a.title + '</a></li>').join('') + '</ul>';
  } else {
    const slug = path.split('/').pop().replace('.html', '');
    const a = await (await fetch('/api/' + slug + '.json')).json();
    document.title = a.title;
    app.innerHTML = '<main><article><img src="/static/logo.png" alt=""><h1>' + a.title + '</h1>' +
      a.paragraphs.map(p => '<p>' + p + '</p>').join('') + '</article></main>';
  }
  for (const url of (window.EXTRA_REQUESTS || [])) {
    try { await fetch(url); } catch (e) { }
  }
}
main();
"""


def article(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    title = f"How to fix {topic} (case {i})"
    paragraphs = [f"Article {i} explains {topic}: step {k}, check the settings, restart the service "
                  f"and confirm that {topic} is resolved for the user." for k in range(6)]
    return {"slug": f"a{i}", "title": title, "paragraphs": paragraphs}


def plain_page(i: int) -> bytes:
    a = article(i)
    body = "".join(f"<p>{p}</p>" for p in a["paragraphs"])
    return (f"<!doctype html><html><head><title>{a['title']}</title></head><body><main><article>"
            f"<h1>{a['title']}</h1>{body}</article></main></body></html>").encode()


def site(n: int = 3, plain: bool = False, extra_requests: tuple[str, ...] = ()) -> FixtureServer:
    """n articles under /kb/, script-built (or plain HTML); `extra_requests` are URLs every page's
    script also fetches (to test what the browser may reach)."""
    shell = SHELL
    if extra_requests:
        shell = shell.replace(b"</head>", b"<script>window.EXTRA_REQUESTS = "
                              + json.dumps(list(extra_requests)).encode() + b";</script></head>")
    routes: dict = {"/robots.txt": Response(200, b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})}
    js = {"Content-Type": "application/json"}
    listing = [{"slug": article(i)["slug"], "title": article(i)["title"]} for i in range(n)]
    if plain:
        links = "".join(f"<li><a href='/kb/{a['slug']}.html'>{a['title']}</a></li>" for a in listing)
        routes["/kb/"] = Response(200, f"<html><body><h1>Help centre</h1><ul>{links}</ul></body></html>".encode())
    else:
        routes["/kb/"] = Response(200, shell)
        routes["/static/app.js"] = Response(200, APP_JS, {"Content-Type": "text/javascript"})
        routes["/api/articles.json"] = Response(200, json.dumps(listing).encode(), js)
    for i in range(n):
        slug = article(i)["slug"]
        routes[f"/kb/{slug}.html"] = Response(200, plain_page(i) if plain else shell)
        routes[f"/api/{slug}.json"] = Response(200, json.dumps(article(i)).encode(), js)
    routes["/static/logo.png"] = Response(200, b"\x89PNG", {"Content-Type": "image/png"})
    routes["/static/site.css"] = Response(200, b"body { font-family: x; }", {"Content-Type": "text/css"})
    return FixtureServer(routes)


def requested(server: FixtureServer) -> list[str]:
    return [r.path for r in server.log]


__all__ = ["Request", "article", "requested", "site"]
