"""Private knowledge bases: a site that needs a bearer token and one that needs a cookie, indexed
with credentials from the environment or a cookies.txt file; credentials never sent to another
origin (a redirect, a sitemap on another port) and never shown (logs, --json, ledger, store,
export files).

Real parts: fixture servers on 127.0.0.1 with OS-chosen ports, kbindex in a subprocess, a real
Chroma store on tmp_path. Two ports of one host are two origins (RFC 6454).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbindex.credentials import REDACTED, Credentials, load_cookies, origin, parse_headers
from kbindex.errors import ConfigError, FetchError, UsageError
from kbindex.fetch import Fetcher
from tests.server import FixtureServer, Request, Response
from tests.sync_helpers import run, summary

TOKEN = "tok-4f9a1c7e2b8d6035-secret"
COOKIE = "sess-91b2c3d4e5f60718-secret"
FAST = ("--delay", "0", "--retries", "0", "--render", "never")


def _article(title: str, n: int) -> bytes:
    words = " ".join(f"{title.lower()} explains step {i} of the procedure for private teams." for i in range(n))
    return (f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1>"
            f"<p>{words}</p></main></body></html>").encode()


def _protected(allowed, other: FixtureServer | None = None) -> FixtureServer:
    """A small KB whose every URL needs `allowed(request)`; /moved.html redirects to `other`,
    and robots.txt lists a sitemap on `other` (another origin)."""
    pages = {
        "/kb/": (b"<html><head><title>KB</title></head><body><h1>KB</h1><ul>"
                 b"<li><a href='/kb/vpn.html'>VPN</a></li><li><a href='/kb/mail.html'>Mail</a></li>"
                 b"<li><a href='/kb/moved.html'>Moved</a></li></ul></body></html>"),
        "/kb/vpn.html": _article("VPN setup", 12),
        "/kb/mail.html": _article("Mail quota", 12),
    }

    def route(body: bytes | None, path: str):
        def answer(request: Request) -> Response:
            if not allowed(request):
                return Response(401, b"<h1>Login required</h1>", {"Content-Type": "text/html",
                                                                  "WWW-Authenticate": "Bearer"})
            if path == "/kb/moved.html" and other is not None:
                return Response(302, b"", {"Location": other.url("/landing.html")})
            if path == "/robots.txt":
                sitemap = f"Sitemap: {other.url('/sitemap.xml')}\n" if other is not None else ""
                return Response(200, ("User-agent: *\nAllow: /\n" + sitemap).encode(),
                                {"Content-Type": "text/plain"})
            # a session cookie of its own: a cookie jar would send it to every port of the host
            return Response(200, body, {"Content-Type": "text/html; charset=utf-8",
                                        "Set-Cookie": "sid=server-set-1234567; Path=/"})
        return answer

    routes = {path: route(body, path) for path, body in pages.items()}
    routes["/kb/moved.html"] = route(None, "/kb/moved.html")
    routes["/robots.txt"] = route(None, "/robots.txt")
    return FixtureServer(routes)


def _other() -> FixtureServer:
    sitemap = b"<?xml version='1.0'?><urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'></urlset>"
    return FixtureServer({
        "/landing.html": Response(200, _article("Landing", 12)),
        "/sitemap.xml": Response(200, sitemap, {"Content-Type": "application/xml"}),
    })


def _bearer(request: Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {TOKEN}"


def _cookie(request: Request) -> bool:
    return f"session={COOKIE}" in request.headers.get("cookie", "")


def _cookies_txt(path: Path, domain: str = "127.0.0.1", first_line: bool = True) -> Path:
    """A cookies.txt as browser extensions write it: expiry 0 for session cookies; first_line:
    with the format's first line, which hand-written files often leave out."""
    flag = "TRUE" if domain.startswith(".") else "FALSE"  # the domain-specified column
    path.write_text(("# Netscape HTTP Cookie File\n" if first_line else "")
                    + f"{domain}\t{flag}\t/\tFALSE\t0\tsession\t{COOKIE}\n"
                    f"{domain}\t{flag}\t/\tFALSE\t0\ttheme\tdark\n"
                    f"{domain}\t{flag}\t/\tFALSE\t1000000000\told\texpired-in-2001\n")
    return path


def _leaks(folder: Path, *texts: str, secrets=(TOKEN, COOKIE)) -> list[str]:
    """Where a secret shows: in the texts given, or in any file under folder (bytes)."""
    found = [f"output {i}" for i, t in enumerate(texts) for s in secrets if s in t]
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [str(path) for s in secrets if s.encode() in data]
    return found


# ------------------------------------------------------------ end to end


def test_bearer_token_from_the_environment_indexes_and_never_leaks(tmp_path):
    with _other() as other, _protected(_bearer, other) as kb:
        db = tmp_path / "db"
        code, out, err = run("index", kb.url("/kb/"), "--db", str(db), "--json", "-v", *FAST,
                             "--header", "Authorization: Bearer ${KB_TOKEN}",
                             env={"KB_TOKEN": TOKEN}, tmp=tmp_path)
        assert code == 0, err
        assert summary(out)["indexed"] >= 2
        # the redirect and the sitemap on the other origin were requested, without credentials
        assert {r.path for r in other.log} >= {"/landing.html", "/sitemap.xml"}
        for request in other.log:
            assert "authorization" not in request.headers and "cookie" not in request.headers
        code2, exported, err2 = run("export", "--db", str(db), "-o", str(tmp_path / "export.jsonl"),
                                    tmp=tmp_path)
        assert code2 == 0, err2
        assert (tmp_path / "export.jsonl").read_text().count("\n") >= 3
        code3, hits, _ = run("query", "VPN setup", "--db", str(db), "--json", tmp=tmp_path)
        assert code3 == 0 and "vpn.html" in hits
    assert _leaks(tmp_path, out, err, exported, err2, hits) == []


def test_without_credentials_401_names_the_source_and_how_to_pass_them(tmp_path):
    with _protected(_bearer) as kb:
        code, out, err = run("index", kb.url("/kb/"), "--db", str(tmp_path / "db"), *FAST, tmp=tmp_path)
    assert code == 1
    text = out + err
    assert kb.url("/kb/") in text and "HTTP 401" in text
    assert f"http://127.0.0.1:{kb.port} needs credentials" in text
    assert "--header 'Authorization: Bearer" in text and "--cookies" in text


def test_wrong_token_says_the_credentials_were_refused_and_hides_them(tmp_path):
    with _protected(_bearer) as kb:
        code, out, err = run("index", kb.url("/kb/"), "--db", str(tmp_path / "db"), "--json", *FAST,
                             "--header", "Authorization: Bearer wrong-token-0123456789", tmp=tmp_path)
    assert code == 1
    assert "were refused" in out + err
    assert _leaks(tmp_path, out, err, secrets=("wrong-token-0123456789",)) == []


@pytest.mark.parametrize("first_line", [True, False], ids=["as exported", "without the first line"])
def test_cookie_file_indexes_and_cookies_stay_on_their_origin(tmp_path, first_line):
    cookies = _cookies_txt(tmp_path / "cookies.txt", first_line=first_line)
    with _other() as other, _protected(_cookie, other) as kb:
        code, out, err = run("index", kb.url("/kb/"), "--db", str(tmp_path / "db"), "--json", *FAST,
                             "--cookies", str(cookies), tmp=tmp_path)
        assert code == 0, err
        assert summary(out)["indexed"] >= 2
        assert other.log, "the redirect to the other origin was not followed"
        for request in other.log:  # same host, other port: cookies ignore ports, kbindex does not
            assert "cookie" not in request.headers and "authorization" not in request.headers
        assert any(_cookie(r) for r in kb.log)
    assert _leaks(tmp_path / "db", out, err) == []


def test_without_the_cookie_a_403_says_how_to_pass_it(tmp_path):
    def forbidden(request: Request) -> Response:
        if _cookie(request):
            return Response(200, _article("Staff view", 12))
        return Response(403, b"<h1>Forbidden</h1>")

    with FixtureServer({"/staff.html": forbidden}) as kb:
        code, out, err = run("index", kb.url("/staff.html"), "--db", str(tmp_path / "db"), *FAST,
                             tmp=tmp_path)
        assert code == 1
        assert "HTTP 403" in out + err and "needs credentials" in out + err
        code, out, err = run("index", kb.url("/staff.html"), "--db", str(tmp_path / "db"), *FAST,
                             "--cookies", str(_cookies_txt(tmp_path / "c.txt")), tmp=tmp_path)
        assert code == 0, err


def test_config_headers_read_the_environment_per_source(tmp_path):
    with _other() as other, _protected(_bearer, other) as kb:
        config = tmp_path / "kbindex.toml"
        config.write_text(
            "[collections.private]\n"
            f"sources = [{{ url = \"{kb.url('/kb/')}\", headers = {{ Authorization = \"Bearer ${{KB_TOKEN}}\" }},"
            " delay = 0, retries = 0, render = \"never\" },\n"
            f"           {{ url = \"{other.url('/landing.html')}\", delay = 0, render = \"never\" }}]\n")
        db = tmp_path / "db"
        code, out, err = run("--config", str(config), "index", "--db", str(db), "--json",
                             env={"KB_TOKEN": TOKEN}, tmp=tmp_path)
        assert code == 0, err
        assert summary(out)["indexed"] >= 3
        for request in other.log:  # the other source got no credentials of the first
            assert "authorization" not in request.headers
        code, out2, err2 = run("--config", str(config), "index", "--db", str(db), tmp=tmp_path)
        assert code == 2 and "KB_TOKEN is not set" in out2 + err2
    assert _leaks(tmp_path, out, err, out2, err2) == []


def test_malformed_header_and_cookie_file_are_usage_errors_without_the_value(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"session={COOKIE}\n")
    cases = [
        (("--header", f"Authorization Bearer {TOKEN}"), "'Name: value'"),
        (("--header", f"Bad Name: {TOKEN}"), "not a valid header name"),
        (("--cookies", str(bad)), "not a Netscape cookies.txt file"),
        (("--cookies", str(tmp_path / "missing.txt")), "cannot read"),
    ]
    for args, message in cases:
        code, out, err = run("index", "http://127.0.0.1:9/kb/", "--db", str(tmp_path / "db"), *args,
                             tmp=tmp_path)
        assert code == 2, (args, err)
        assert message in err
        assert TOKEN not in out + err and COOKIE not in out + err


# ------------------------------------------------------------ the parts


def test_credentials_go_to_their_origins_only(tmp_path):
    jar = load_cookies(_cookies_txt(tmp_path / "c.txt", domain=".example.com"))
    creds = Credentials(["https://kb.example.com/docs/"], {"Authorization": f"Bearer {TOKEN}"}, jar)
    sent = creds.headers_for("https://kb.example.com/other/page?x=1")
    assert sent["Authorization"] == f"Bearer {TOKEN}" and f"session={COOKIE}" in sent["Cookie"]
    assert "expired-in-2001" not in sent["Cookie"]
    for url in ("http://kb.example.com/docs/", "https://kb.example.com:8443/docs/",
                "https://cdn.example.com/docs/", "https://kb.example.com.evil.test/",
                "https://evil.test/?https://kb.example.com/"):
        assert creds.headers_for(url) == {}, url
    assert origin("HTTPS://KB.example.com/x") == origin("https://kb.example.com:443/y")


def test_redaction_and_repr_hide_every_secret(tmp_path):
    creds = Credentials(["https://kb.example.com/"], {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": "k3y-0987654321"},
                        load_cookies(_cookies_txt(tmp_path / "c.txt")))
    text = f"echoed Bearer {TOKEN}; alone {TOKEN}; key k3y-0987654321; cookie session={COOKIE}"
    redacted = creds.redact(text)
    for secret in (TOKEN, "k3y-0987654321", COOKIE):
        assert secret not in redacted
    assert redacted.count(REDACTED) == 4
    assert TOKEN not in repr(creds) and COOKIE not in str(creds) and "X-Api-Key: ***" in repr(creds)


def test_env_expansion_and_header_parsing(monkeypatch):
    monkeypatch.setenv("KB_TOKEN", TOKEN)
    assert parse_headers(["Authorization: Bearer ${KB_TOKEN}", "X-A: $$5"]) == {
        "Authorization": f"Bearer {TOKEN}", "X-A": "$5"}
    assert parse_headers({"X-Key": "$KB_TOKEN"}) == {"X-Key": TOKEN}
    monkeypatch.delenv("KB_TOKEN")
    with pytest.raises(ConfigError, match="KB_TOKEN is not set"):
        parse_headers(["Authorization: Bearer ${KB_TOKEN}"])
    with pytest.raises(UsageError, match="line break"):
        parse_headers({"X-A": "a\r\nHost: evil"})


def test_a_server_echoing_the_token_in_an_error_is_redacted():
    def echo(request: Request) -> Response:
        return Response(302, b"", {"Location": "ftp://x/" + request.headers.get("authorization", "")})

    creds = Credentials([], {"Authorization": f"Bearer {TOKEN}"})
    with FixtureServer({"/p": echo}) as server:
        creds = Credentials([server.base], creds.headers)
        with Fetcher(credentials=creds, retries=0) as fetcher, pytest.raises(FetchError) as caught:
            fetcher.fetch(server.url("/p"), allow_private=True)
    assert TOKEN not in str(caught.value) and REDACTED in str(caught.value)
    assert json.dumps(caught.value.reason).count(TOKEN) == 0
