"""Re-indexing cost: a real documentation folder (Python 3.11's library reference, >= 300 HTML
pages from Debian's python3.11-doc package) indexed once with the default model, then re-indexed
unchanged, then re-indexed after 1% of its pages changed. Baseline: the first run, in the same run.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from benchmarks.common import WORK, run_kbindex

NAME = "sync"
PACKAGE = "python3.11-doc"
DOCS = WORK / "pydoc"
LIBRARY = DOCS / "extracted" / "usr" / "share" / "doc" / "python3.11" / "html" / "library"


def ensure_docs() -> str | None:
    """Download and unpack the package into .bench/ when missing; a reason string if impossible."""
    if LIBRARY.is_dir():
        return None
    DOCS.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "download", PACKAGE], check=True, capture_output=True, cwd=DOCS,
                       timeout=300)
        deb = next(DOCS.glob(f"{PACKAGE}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(DOCS / "extracted")], check=True, timeout=300)
    except (OSError, subprocess.SubprocessError, StopIteration) as exc:
        return f"cannot get {PACKAGE} with apt-get ({type(exc).__name__}: {exc})"
    return None if LIBRARY.is_dir() else f"{PACKAGE} has no {LIBRARY}"


def run() -> list[str]:
    problem = ensure_docs()
    if problem:
        return [f"skipped: {problem}"]
    folder = WORK / "sync-docs"
    db = WORK / "index-sync"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(db, ignore_errors=True)
    shutil.copytree(LIBRARY, folder)
    pages = sorted(folder.glob("*.html"))
    args = ("index", str(folder), "--db", str(db), "--device", "cpu", "--json")

    first_s, first_rss, out = run_kbindex(*args)
    first = json.loads(out)
    same_s, same_rss, out = run_kbindex(*args)
    same = json.loads(out)

    n = max(1, round(len(pages) / 100))
    changed = pages[:: len(pages) // n][:n]  # 1%, spread over the folder
    for page in changed:  # one new sentence in the first paragraph of each page
        html = page.read_text(encoding="utf-8")
        page.write_text(html.replace("<p>", "<p>This page was revised for the benchmark. ", 1),
                        encoding="utf-8")
    edit_s, edit_rss, out = run_kbindex(*args)
    edit = json.loads(out)
    verify_s, _, out = run_kbindex("verify", "--db", str(db), "--json")
    return [
        f"corpus: {len(pages)} pages of Python 3.11's library reference ({PACKAGE}), "
        f"{first['chunks_added']} chunks, model all-MiniLM-L6-v2 on CPU",
        f"first index: {first_s:.1f} s (peak RSS (all processes) {first_rss:.0f} MiB)",
        f"re-index unchanged: {same_s:.2f} s (peak RSS (all processes) {same_rss:.0f} MiB), "
        f"unchanged {same['unchanged']}, chunks_added {same['chunks_added']}",
        f"ratio unchanged / first: {same_s / first_s:.3f} ({first_s / same_s:.0f}x faster; target <= 0.05)",
        f"re-index after {len(changed)} pages ({len(changed) / len(pages):.1%}) changed: {edit_s:.2f} s, "
        f"indexed {edit['indexed']}, chunks written {edit['chunks_added']}, "
        f"embedded {edit['chunks_embedded']}, deleted {edit['chunks_deleted']}",
        f"ratio 1% changed / first: {edit_s / first_s:.3f}",
        f"verify: {verify_s:.2f} s, ok {json.loads(out)['ok']}",
    ]
