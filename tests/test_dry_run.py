"""`index --dry-run` is the index run with a writer that writes nothing: its plan must agree with
what the real run then does, page by page and in its counts, and it must leave --db untouched."""

from __future__ import annotations

import json
import shutil

from tests.sites import POSTS, blog, docs

FAST = ("--delay", "0")
SAMPLE = "data/sample-kb"


def plan_and_run(kb, db, *args):
    """(plan rows, plan summary, real run's summary) for the same arguments."""
    dry = kb("index", *args, "--dry-run", "--json")
    assert dry.exit_code in (0, 1), dry.stderr
    assert not db.exists(), "a dry run must not create or write the index folder"
    rows = [json.loads(line) for line in dry.stdout.splitlines()]
    real = kb("index", *args, "--json")
    assert real.exit_code == dry.exit_code, real.stderr
    return rows[:-1], rows[-1], json.loads(real.stdout.splitlines()[-1])


def assert_agree(rows, planned, done):
    for key in ("sources", "indexed", "skipped", "failed", "chunks_added", "skipped_by", "failed_by",
                "discovered", "fetched"):
        assert planned[key] == done[key], key
    assert planned["chunks_embedded"] == 0 and planned["pruned"] == 0
    assert sorted(r["source"] for r in rows if r["action"] == "skip") == sorted(s["source"] for s in done["skips"])
    assert sorted(r["source"] for r in rows if r["action"] == "fail") == sorted(
        f["source"] for f in done["failures"])
    assert sum(r["chunks"] for r in rows if r["action"] == "index") == done["chunks_added"]


def test_folder_with_duplicates_and_empty_files_plans_what_the_run_does(kb, db, tmp_path):
    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE, folder)
    first = sorted(folder.glob("*.md"))[0]
    (folder / "copy.md").write_bytes(first.read_bytes())  # same text under another name
    (folder / "sub").mkdir()
    (folder / "sub" / "again.md").write_bytes(first.read_bytes())
    (folder / "empty.txt").write_text("")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    rows, planned, done = plan_and_run(kb, db, str(folder), str(first), "--workers", "1")
    assert planned["skipped"] >= 3  # two duplicates, the empty file
    assert_agree(rows, planned, done)


def test_crawls_with_duplicate_urls_and_listing_pages_plan_what_the_run_does(kb, db):
    with blog() as site:  # the second start page is reached by the first crawl: collapsed, reported
        rows, planned, done = plan_and_run(kb, db, site.url("/"), site.url(POSTS[0].path), *FAST)
    assert planned["indexed"] >= 1 and planned["skipped"] >= 1
    assert any(r["action"] == "skip" and r["kind"] == "duplicate" and r["source"] == site.url(POSTS[0].path)
               for r in rows)
    assert_agree(rows, planned, done)


def test_docs_site_plans_what_the_run_does(kb, db):
    with docs() as site:
        rows, planned, done = plan_and_run(kb, db, site.url("/docs/index.html"), *FAST, "--timeout", "1")
    assert_agree(rows, planned, done)
