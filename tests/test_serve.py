"""`kbindex serve`: the HTTP API against a real server process on 127.0.0.1 (fake embedder)."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time

import httpx
import pytest

from tests.serving import ROOT, Served, kbindex, wait_for

SAMPLE_KB = ROOT / "data" / "sample-kb"
PRINTER = "printer shows offline spooler snmp"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The sample KB indexed into a store of its own (read-only for the tests that share it)."""
    db = tmp_path_factory.mktemp("serve") / "index"
    done = kbindex("index", str(SAMPLE_KB), "--db", str(db), "--model", "fake:hash", "-q")
    assert done.returncode == 0, done.stderr
    return db


@pytest.fixture(scope="module")
def server(indexed):
    with Served(indexed) as served:
        yield served


def get(server, path, **params):
    return httpx.get(server.url + path, params=params, timeout=30)


def test_search_answers_exactly_what_query_json_prints(server, indexed):
    for mode in ("hybrid", "vector", "keyword"):
        cli = kbindex("query", PRINTER, "--db", str(indexed), "--model", "fake:hash", "--json", "--mode", mode,
                      "-k", "3")
        assert cli.returncode == 0, cli.stderr
        response = get(server, "/api/search", q=PRINTER, k=3, mode=mode)
        assert response.status_code == 200
        assert response.json() == json.loads(cli.stdout)
    assert response.json()["hits"][0]["source"].endswith("printer-offline-windows.html")


def test_batch_search_gives_each_query_what_a_single_search_gives(server):
    queries = [PRINTER, "postgresql wal disk full", "reset mfa authenticator new phone"]
    response = httpx.post(server.url + "/api/search", json={"queries": queries, "k": 2}, timeout=30)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["query"] for r in results] == queries
    for q, result in zip(queries, results):
        assert result == get(server, "/api/search", q=q, k=2).json()


def test_where_filters_and_per_doc(server):
    source = str(SAMPLE_KB / "postgresql-wal-disk-full.md")
    hits = get(server, "/api/search", q="disk", k=10, where=f"source={source}", per_doc=0).json()["hits"]
    assert len(hits) > 1 and {h["source"] for h in hits} == {source}
    one = get(server, "/api/search", q="disk", k=10, where=f"source={source}").json()["hits"]
    assert len(one) == 1


@pytest.mark.parametrize("params, status, message", [
    ({"q": ""}, 400, "empty query"),
    ({"q": "   "}, 400, "empty query"),
    ({"q": "x" * 2001}, 400, "query too long"),
    ({"q": "printer", "k": 0}, 400, "k must be between 1 and 100"),
    ({"q": "printer", "k": 101}, 400, "k must be between 1 and 100"),
    ({"q": "printer", "k": "many"}, 400, "k:"),
    ({"q": "printer", "mode": "fuzzy"}, 400, "unknown mode 'fuzzy'"),
    ({"q": "printer", "per_doc": -1}, 400, "per_doc"),
    ({"q": "printer", "collection": "nosuch"}, 404, "no collection 'nosuch'"),
    ({"q": "printer", "collection": "bad/name"}, 400, "invalid collection name"),
    ({"q": "printer", "where": "no-equals-sign"}, 400, "where needs KEY=VALUE"),
    ({"q": "printer", "where": "=value"}, 400, "where needs KEY=VALUE"),
    ({}, 400, "q:"),
])
def test_bad_search_input_is_a_one_line_4xx(server, params, status, message):
    response = get(server, "/api/search", **params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and message in body["error"] and "\n" not in body["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"queries": []}, 400, "queries:"),
    ({"queries": ["ok", ""]}, 400, "empty query"),
    ({"queries": ["q"] * 101}, 400, "queries:"),
    ({"queries": ["printer"], "k": 1000}, 400, "k must be between"),
    ({"queries": ["printer"], "where": ["broken"]}, 400, "where needs KEY=VALUE"),
    ({"queries": ["x" * 600_000, "y" * 600_000]}, 413, "over 1048576 bytes"),
])
def test_bad_batch_input_is_a_one_line_4xx(server, body, status, message):
    response = httpx.post(server.url + "/api/search", json=body, timeout=30)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize("content, message", [
    (b"not json", "the request body is not valid JSON"),
    (b'["printer"]', 'the request body must be a JSON object, e.g. {"queries": ["..."]}'),
])
def test_a_body_that_is_not_a_json_object_says_so(server, content, message):
    response = httpx.post(server.url + "/api/search", content=content,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_a_chunked_body_over_the_cap_is_refused(server):
    def parts():  # no Content-Length: the cap is counted as the body arrives
        yield b'{"queries": ["'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"]}'

    response = httpx.post(server.url + "/api/search", content=parts(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413


def test_unknown_paths_and_methods_answer_json(server):
    assert get(server, "/api/nothing").json() == {"error": "Not Found"}
    response = httpx.delete(server.url + "/api/search", timeout=30)
    assert response.status_code == 405 and "only reads" in response.json()["error"]


def test_collections_sources_document_and_chunk(server):
    assert get(server, "/api/collections").json() == [
        {"collection": "kbindex", "model": "fake:hash", "chunks": 79, "default": True}
    ]
    sources = get(server, "/api/sources").json()
    assert len(sources) == 10 and {"source", "title", "chunks", "indexed_at"} <= set(sources[0])
    source = str(SAMPLE_KB / "postgresql-wal-disk-full.md")
    row = next(s for s in sources if s["source"] == source)
    doc = get(server, "/api/document", source=source).json()
    assert doc["title"].startswith("PostgreSQL Disk Filling Up")
    assert [c["position"] for c in doc["chunks"]] == list(range(row["chunks"]))
    assert all(c["url"].startswith("file://") for c in doc["chunks"])
    anchored = [s for s in doc["sections"] if s["anchor"]]
    assert anchored and anchored[-1]["url"].endswith("#" + anchored[-1]["anchor"])
    # The text by sections holds every chunk's text, the chunker's overlaps written once.
    outlook = get(server, "/api/document", source=str(SAMPLE_KB / "outlook-working-offline-ost-rebuild.txt")).json()
    whole = "\n".join(s["text"] for s in outlook["sections"])
    assert all(c["text"] in whole for c in outlook["chunks"])
    repeated = "Confirm the connection to the mail server"
    assert sum(repeated in c["text"] for c in outlook["chunks"]) == 2 and whole.count(repeated) == 1

    middle = doc["chunks"][2]
    widened = get(server, f"/api/chunk/{middle['id']}", context=1).json()
    assert widened["chunk"]["id"] == middle["id"] and widened["chunk"]["text"] == middle["text"]
    assert [c["id"] for c in widened["before"]] == [doc["chunks"][1]["id"]]
    assert [c["id"] for c in widened["after"]] == [doc["chunks"][3]["id"]]
    first = get(server, f"/api/chunk/{doc['chunks'][0]['id']}", context=5).json()
    assert first["before"] == [] and len(first["after"]) == 5
    assert get(server, f"/api/chunk/{middle['id']}").json()["before"] == []


@pytest.mark.parametrize("path, params, status, message", [
    ("/api/document", {"source": "/no/such/file.md"}, 404, "no document"),
    ("/api/document", {}, 400, "source:"),
    ("/api/chunk/nosuch-00001", {}, 404, "no chunk"),
    ("/api/chunk/nosuch-00001", {"context": 21}, 400, "context must be between 0 and 20"),
    ("/api/sources", {"collection": "nosuch"}, 404, "no collection"),
])
def test_bad_reads_are_one_line_4xx(server, path, params, status, message):
    response = get(server, path, **params)
    assert response.status_code == status and message in response.json()["error"]


def test_openapi_page_and_health(server):
    schema = get(server, "/openapi.json").json()
    assert {"/api/search", "/api/collections", "/api/sources", "/api/document", "/api/chunk/{chunk_id}",
            "/healthz"} <= set(schema["paths"])
    assert get(server, "/healthz").json() == {"status": "ok"}
    page = get(server, "/")
    assert page.status_code == 200 and 'id="q"' in page.text
    # Everything the page loads comes from this server.
    assert "//" not in page.text.replace("<!doctype html>", "").split("<body>")[0].replace("://", "")
    assert get(server, "/static/app.js").status_code == 200


def test_access_log_has_one_line_per_request_without_the_query_text(server):
    get(server, "/api/search", q="secretword printer", k=2)
    line = wait_for(lambda: next((x for x in server.lines if "GET /api/search?q&k 200" in x), None), 5)
    assert line and " ms" in line
    assert "secretword" not in server.log


def test_token_guards_everything_but_health_and_the_page(indexed):
    with Served(indexed, "--token", "s3cret-token") as served:
        def status(path, token=None, method="GET"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.request(method, served.url + path, headers=headers, timeout=30)

        for path in ("/healthz", "/", "/static/app.js", "/static/app.css"):
            assert status(path).status_code == 200, path
        for path in ("/api/search?q=printer", "/api/collections", "/api/sources", "/openapi.json",
                     "/api/document?source=x", "/api/chunk/x"):
            denied = status(path)
            assert denied.status_code == 401, path
            assert "token" in denied.json()["error"] and denied.headers["www-authenticate"] == "Bearer"
            assert status(path, "wrong-token").status_code == 401
        assert status("/mcp", method="POST").status_code == 401
        assert status("/api/search?q=printer", "s3cret-token").status_code == 200
        assert status("/api/collections", "s3cret-token").json()[0]["collection"] == "kbindex"


def test_cors_is_off_unless_an_origin_is_given(server, indexed):
    origin = {"Origin": "https://intranet.example.com"}
    plain = httpx.get(server.url + "/api/collections", headers=origin, timeout=30)
    assert "access-control-allow-origin" not in plain.headers
    with Served(indexed, "--cors-origin", "https://intranet.example.com") as served:
        allowed = httpx.get(served.url + "/api/collections", headers=origin, timeout=30)
        assert allowed.headers["access-control-allow-origin"] == "https://intranet.example.com"
        other = httpx.get(served.url + "/api/collections", headers={"Origin": "https://evil.example"},
                          timeout=30)
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "kb.example.com"])
def test_binding_beyond_loopback_without_a_token_is_refused(indexed, host):
    done = kbindex("serve", "--host", host, "--db", str(indexed), "--model", "fake:hash")
    assert done.returncode == 2
    assert f"refusing to serve on {host} without --token" in done.stderr
    assert "Traceback" not in done.stderr


def test_loopback_addresses_need_no_token():
    from kbindex.serve.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "127.0.0.1.nip.io"))


def test_a_taken_port_is_a_usage_error(server, indexed):
    port = server.url.rsplit(":", 1)[1]
    done = kbindex("serve", "--port", port, "--db", str(indexed), "--model", "fake:hash")
    assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_requests_in_flight_then_exits_0(indexed, sig):
    with Served(indexed) as served:
        # A slow request: 100 long queries, every chunk of each returned.
        body = {"queries": [f"printer spooler driver disk wal {i} " * 40 for i in range(100)], "k": 100,
                "per_doc": 0}
        answers = []
        sender = threading.Thread(target=lambda: answers.append(
            httpx.post(served.url + "/api/search", json=body, timeout=60)))
        sender.start()
        time.sleep(0.3)  # the request is in the server now (it takes seconds: the log line comes after)
        assert "POST /api/search" not in served.log
        assert served.stop(sig) == 0
        sender.join()
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["results"]) == 100


def test_an_index_run_in_another_process_is_served_within_seconds(tmp_path):
    """Written while the server answers: queries never fail, the writer is never blocked, and
    the new document is found (by both retrievers) within 5 s of the run's end, no restart."""
    kb = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, kb)
    db = tmp_path / "index"
    assert kbindex("index", str(kb), "--db", str(db), "--model", "fake:hash", "-q").returncode == 0
    with Served(db) as served:
        word = "zorblaxian"
        assert get(served, "/api/search", q=word, mode="keyword").json()["hits"] == []
        failures, answered, stop = [], [], threading.Event()

        def load():
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    r = client.get(served.url + "/api/search", params={"q": "printer offline", "k": 3})
                    (answered if r.status_code == 200 else failures).append(r)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(30):
            (kb / f"new-{i}.md").write_text(f"# Quantum coffee machine {i}\n\nThe {word} brewer number {i} "
                                            f"descales itself every {i} days. " * 5)
        run = kbindex("index", str(kb), "--db", str(db), "--model", "fake:hash", "-q")
        finished = time.monotonic()
        assert run.returncode == 0, run.stderr  # the server held no lock
        def new_hits():  # vector search always finds something: only a new document counts
            hits = get(served, "/api/search", q=f"quantum coffee machine {word} brewer descales itself",
                       mode="vector", k=3).json()["hits"]
            return [h for h in hits if "/new-" in h["source"]]

        found = wait_for(new_hits, 10)
        seen_after = time.monotonic() - finished
        stop.set()
        for t in threads:
            t.join()
        assert found, "the new documents were not served within 10 s"
        assert seen_after < 5, seen_after
        assert get(served, "/api/search", q=word, mode="keyword", k=50, per_doc=1).json()["hits"]
        assert failures == [] and len(answered) > 10
        assert get(served, "/api/collections").json()[0]["chunks"] > 79


def test_the_embedder_is_called_one_at_a_time_unless_it_is_thread_safe():
    from kbindex.serve.reader import thread_safe

    class Probe:
        name = "probe"
        inside = 0
        most = 0

        def embed(self, texts):
            Probe.inside += 1
            Probe.most = max(Probe.most, Probe.inside)
            time.sleep(0.01)
            Probe.inside -= 1
            return [[1.0] for _ in texts]

    wrapped = thread_safe(Probe())
    threads = [threading.Thread(target=lambda: [wrapped.embed(["q"]) for _ in range(5)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Probe.most == 1 and wrapped.name == "probe"


def test_a_search_past_the_deadline_answers_504_and_others_go_on(kb, db):
    """The app in this process with a real store and an embedder that hangs: the query is cut off."""
    import uvicorn

    from kbindex.config import Settings
    from kbindex.serve.app import create_app
    from kbindex.serve.reader import Reader
    from kbindex.serve.server import bind
    from tests.fakes import HashEmbedder

    assert kb("index", str(SAMPLE_KB)).exit_code == 0
    release = threading.Event()

    class Hanging(HashEmbedder):
        def embed(self, texts):
            release.wait(30)
            return super().embed(texts)

    reader = Reader(Settings(db=db, model="fake:hash"), lambda name, model: Hanging())
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(reader, deadline=0.5), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        assert wait_for(lambda: server.started, 30)
        start = time.monotonic()
        late = httpx.get(url + "/api/search", params={"q": "printer offline"}, timeout=30)
        assert late.status_code == 504 and late.json() == {"error": "the search took longer than 0.5 s"}
        assert time.monotonic() - start < 5
        keyword = httpx.get(url + "/api/search", params={"q": "printer offline", "mode": "keyword"}, timeout=30)
        assert keyword.status_code == 200 and keyword.json()["hits"]
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)


def test_the_snapshot_is_kept_while_a_run_is_mid_write_and_swapped_after(kb, db):
    """A changed ledger with a dirty keyword index (a run writing now) does not reopen; once the
    run marks it clean, the next look does."""
    from kbindex.config import Settings
    from kbindex.serve.reader import Reader
    from kbindex.store.ledger import Entry, Ledger
    from kbindex.store.lexical import LexicalIndex
    from tests.fakes import HashEmbedder

    assert kb("index", str(SAMPLE_KB)).exit_code == 0
    reader = Reader(Settings(db=db, model="fake:hash"), lambda name, model: HashEmbedder(), interval=0.05)
    reader.start()
    try:
        lexical = LexicalIndex.open(db, "kbindex")
        lexical.mark_dirty()
        ledger = Ledger(db, "kbindex")
        ledger.put(Entry(source="/made/up.md", root="/made"))
        time.sleep(1.0)
        assert reader.generation == 1
        lexical.mark_clean()
        assert wait_for(lambda: reader.generation == 2, 5)
        ledger.remove(["/made/up.md"])  # a change with nothing mid-write: reopened at once
        assert wait_for(lambda: reader.generation == 3, 5)
        time.sleep(0.5)
        assert reader.generation == 3  # reopening does not count as a change
    finally:
        reader.stop()


@pytest.mark.server
def test_served_from_a_chroma_server_and_in_step_with_it(tmp_path):
    """--chroma-url: the vectors live in a real `chroma run`; the keyword index and the ledger in
    --db. A run writing to the server is served within seconds, as with a local store."""
    from tests.test_server import ChromaServer, free_port

    chroma = ChromaServer(tmp_path / "chroma", free_port())
    chroma.start()
    try:
        kb, db = tmp_path / "kb", tmp_path / "index"
        shutil.copytree(SAMPLE_KB, kb)
        remote = ("--db", str(db), "--model", "fake:hash", "--chroma-url", chroma.url)
        assert kbindex("index", str(kb), *remote, "-q").returncode == 0
        with Served(db, "--chroma-url", chroma.url) as served:
            hits = get(served, "/api/search", q=PRINTER, k=1).json()["hits"]
            assert hits[0]["source"].endswith("printer-offline-windows.html")
            (kb / "new.md").write_text("# Zorblaxian brewer\n\nThe zorblaxian brewer descales itself.\n")
            assert kbindex("index", str(kb), *remote, "-q").returncode == 0
            found = wait_for(lambda: get(served, "/api/search", q="zorblaxian brewer").json()["hits"][0]
                             ["source"].endswith("new.md"), 5)
            assert found
    finally:
        chroma.stop()


def test_a_missing_collection_is_noted_at_start(tmp_path, indexed):
    """A mistyped --db or --collection gives a server that answers 404: it says so when it starts,
    before it says where it serves."""
    with Served(tmp_path / "nothing-here") as served:
        assert "no collection 'kbindex'" in served.log and "no collections yet" in served.log
        assert get(served, "/api/search", q="printer").status_code == 404
    with Served(indexed, "--collection", "notes") as served:
        assert "no collection 'notes'" in served.log and "collections here: kbindex" in served.log
    with Served(indexed) as served:
        assert "note:" not in served.log
