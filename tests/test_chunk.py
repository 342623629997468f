import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from kbindex.chunk import (
    ELLIPSIS,
    check_config,
    chunk_document,
    context_budget,
    context_line,
    fit_context_lines,
)
from kbindex.embedding import packaged_model_path, register_embedder
from kbindex.errors import UsageError
from kbindex.extract import extract
from kbindex.normalize import normalize_document
from kbindex.records import Document, Page, Section
from tests.fakes import HashEmbedder


@pytest.fixture(scope="module")
def count_tokens():
    """The packaged model's own tokenizer (fast, no torch needed)."""
    tok = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return lambda texts: [len(e.ids) for e in tok.encode_batch(list(texts))]


def _doc(*sections):
    return Document(source="/kb/x.md", title="Big Title", sections=tuple(sections))


def test_no_chunk_exceeds_the_window_including_specials_and_context(count_tokens):
    para = " ".join(f"Sentence number {i} talks about max_wal_size and replication slots." for i in range(60))
    code = "\n".join(f"line_{i} = compute({i}, 'x' * {i})" for i in range(120))
    blob = "x" * 5000  # one enormous "word"
    doc = _doc(Section(("Setup",), para + "\n\n" + code), Section(("Setup", "Blob"), blob))
    config = check_config(128, 16, 256)
    chunks = chunk_document(doc, count_tokens, config)
    assert len(chunks) > 5
    assert max(count_tokens([c.embed_text for c in chunks])) <= 128
    assert all(c.embed_text.startswith("Big Title > Setup") for c in chunks)
    # nothing lost: every sentence and code line is in some chunk
    joined = "\n".join(c.text for c in chunks)
    for i in range(60):
        assert f"Sentence number {i} talks" in joined
    for i in range(120):
        assert f"line_{i} = compute({i}, 'x' * {i})" in joined  # code lines never split mid-line
    assert joined.count("x") >= 5000


def test_ids_are_deterministic_and_positions_ordered(count_tokens):
    doc = _doc(Section(("A",), "alpha " * 300), Section(("B",), "beta"))
    config = check_config(64, 8, 256)
    first = chunk_document(doc, count_tokens, config)
    again = chunk_document(doc, count_tokens, config)
    assert [c.id for c in first] == [c.id for c in again]
    assert [c.position for c in first] == list(range(len(first)))
    assert len({c.id for c in first}) == len(first)
    assert first[-1].section == "B" and first[-1].text == "beta"


def test_overlap_repeats_the_end_of_the_previous_chunk(count_tokens):
    text = " ".join(f"Fact {i} is here." for i in range(80))
    chunks = chunk_document(_doc(Section((), text)), count_tokens, check_config(64, 16, 256))
    assert len(chunks) >= 3
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last_sentence = prev.text.split(". ")[-1].rstrip(".")
        assert last_sentence in nxt.text


@pytest.mark.parametrize("size,overlap,message", [
    (512, 32, "exceeds the model's limit of 256"),
    (16, 0, "too small"),
    (128, 64, "less than half"),
    (128, -1, "at least 0"),
])
def test_bad_sizes_are_refused(size, overlap, message):
    with pytest.raises(UsageError, match=message):
        check_config(size, overlap, 256)


def test_the_tokenizer_is_called_per_level_not_per_section(count_tokens):
    """The tokenizer costs per call: a long document is measured in a handful of calls."""
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return count_tokens(texts)

    sections = [Section(("Part", f"Topic {i}"), "\n\n".join(
        f"Paragraph {j} of topic {i} explains one more detail of the setting." for j in range(3 + i % 40)))
        for i in range(80)]
    chunks = chunk_document(_doc(*sections), counting, check_config(128, 16, 256))
    assert len(chunks) > 80
    assert max(count_tokens([c.embed_text for c in chunks])) <= 128
    # context lines, sections, paragraphs of the long sections, finished chunks
    assert len(calls) <= 5, calls


# ---------------------------------------------------------------- the window is a hard limit

CASE = Path(__file__).parent / "fixtures" / "cases" / "chunk-window" / "vpn-notice.md"


class TokenizedHashEmbedder(HashEmbedder):
    """The fake embedder's vectors, with the packaged model's real token counts (cheap: no model)."""

    def __init__(self, name: str = "faketok:hash", device: str = "cpu"):
        super().__init__(name, device)
        tok = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok

    def count_tokens(self, texts):
        return [len(e.ids) for e in self._tok.encode_batch(list(texts))]


register_embedder("faketok", lambda name, device: TokenizedHashEmbedder(name, device))


def _fits(chunks, count_tokens, window):
    """Every embedded text within the window, its context line within its share."""
    assert max(count_tokens([c.embed_text for c in chunks])) <= window
    specials = count_tokens([""])[0]
    prefixes = [c.embed_text[: -len(c.text)] if c.text else c.embed_text for c in chunks]
    assert max(count_tokens(prefixes)) - specials <= context_budget(window)


def test_a_context_line_longer_than_the_window_is_shortened_in_tokens(count_tokens):
    """Case 11: a 184-character CJK title and a 76-character heading (252 tokens of context)."""
    doc = extract(Page(source=str(CASE), body=CASE.read_bytes()))
    # The chunks hold the normalized text (NFKC: the full-width commas become ASCII ones).
    paragraphs = [p for p in normalize_document(doc).sections[-1].text.split("\n\n") if p.strip()]
    assert len(paragraphs) == 3
    assert count_tokens([context_line(doc.title, doc.sections[-1].heading)])[0] > 250  # the case
    chunks = chunk_document(doc, count_tokens, check_config(256, 32, 256))
    _fits(chunks, count_tokens, 256)
    assert 1 <= len(chunks) <= 3
    assert all(len(c.text) >= 20 for c in chunks)
    for paragraph in paragraphs:  # each paragraph's start and end found whole in a chunk
        assert any(paragraph[:15] in c.text for c in chunks)
        assert any(paragraph[-15:] in c.text for c in chunks)
    # The shortened line keeps the start of the title and says that it was shortened.
    assert all(c.embed_text.startswith(doc.title[:20]) for c in chunks)
    assert all(ELLIPSIS in c.embed_text.split("\n\n")[0] for c in chunks)


def test_case_indexed_and_exported_fits_the_window(kb, tmp_path, count_tokens):
    """Case 11 end to end: index, export with vectors, count with the packaged tokenizer."""
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / CASE.name).write_bytes(CASE.read_bytes())
    out = kb("index", str(folder), "--model", "faketok:hash", "--json")
    assert out.exit_code == 0, out.output
    dump = tmp_path / "dump.jsonl"
    assert kb("export", "--model", "faketok:hash", "--with-vectors", "-o", str(dump)).exit_code == 0
    rows = [json.loads(line) for line in dump.read_text().splitlines()[1:] if line.strip()]
    assert 1 <= len(rows) <= 6
    assert all(len(r["text"]) >= 20 for r in rows)
    texts = {r["text"] for r in rows}
    vectors = {tuple(r["embedding"]) for r in rows}
    assert len(vectors) == len(texts)  # different text, different vector
    # What was embedded: the chunks as chunk_document makes them, every one within 256 tokens.
    doc = extract(Page(source=str(folder / CASE.name), body=CASE.read_bytes()))
    chunks = chunk_document(doc, count_tokens, check_config(256, 32, 256))
    assert {c.text for c in chunks} == texts
    assert max(count_tokens([c.embed_text for c in chunks])) <= 256


def test_an_export_without_vectors_is_imported_with_the_context_line_cut(kb, tmp_path):
    """Import embeds what an index run embeds: the cut context line, not the whole one (with the
    hashing test embedder, the same embedded text gives the same vector)."""
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / CASE.name).write_bytes(CASE.read_bytes())
    assert kb("index", str(folder), "--model", "faketok:hash").exit_code == 0
    plain, indexed = tmp_path / "plain.jsonl", tmp_path / "indexed.jsonl"
    assert kb("export", "--model", "faketok:hash", "-o", str(plain)).exit_code == 0
    assert kb("export", "--model", "faketok:hash", "--with-vectors", "-o", str(indexed)).exit_code == 0
    other = tmp_path / "other"
    out = kb("import", str(plain), "--model", "faketok:hash", "--db", str(other))
    assert out.exit_code == 0, out.output
    imported = tmp_path / "imported.jsonl"
    assert kb("export", "--model", "faketok:hash", "--with-vectors", "--db", str(other),
              "-o", str(imported)).exit_code == 0

    def vectors(path):
        return {json.loads(line)["id"]: json.loads(line)["embedding"]
                for line in path.read_text().splitlines()[1:] if line.strip()}

    assert vectors(imported) == vectors(indexed)


@pytest.mark.parametrize("title,heading", [
    # made up: one unbroken URL as the title, a long Russian heading path, a Korean title with
    # spaces, host names (a token per dot and dash), Thai (spaces only between phrases)
    ("https://kb.example.com/" + "/".join(f"segment{i}-with-words" for i in range(60)), "Setup"),
    ("Настройка", " > ".join(["Раздел о подключении удалённых сотрудников к корпоративной сети"] * 8)),
    (" ".join(["원격 근무자를 위한 보안 연결 설정 안내"] * 12), "설치"),
    ("Hosts", " ".join(f"node-{i:03d}.rack{i % 7}.dc-eu-west.internal.example.com" for i in range(20))),
    (" ".join(["การตั้งค่าการเชื่อมต่อเครือข่าย ส่วนตัวเสมือน"] * 10), "ขั้นตอน"),
])
@pytest.mark.parametrize("window", [32, 128, 256])
def test_long_titles_in_any_script_never_push_a_chunk_past_the_window(count_tokens, title, heading,
                                                                        window):
    body = "\n\n".join(f"Paragraph {i} explains how to renew the client certificate on a laptop."
                       for i in range(6))
    doc = Document(source="/kb/x.md", title=title, sections=(Section((heading,), body),))
    chunks = chunk_document(doc, count_tokens, check_config(window, window // 8, 256))
    _fits(chunks, count_tokens, window)
    assert all(len(c.text) >= 20 for c in chunks)  # never a body of a few characters
    body_tokens = count_tokens([body])[0]
    # The body keeps at least about three quarters of the window: no more chunks than that needs.
    assert len(chunks) <= 2 * -(-body_tokens // (window * 3 // 4 - window // 8 - 4)) + 1


def test_shortening_a_context_line_costs_a_few_tokenizer_calls(count_tokens):
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return count_tokens(texts)

    lines = ["标题" * 400, "https://example.com/" + "a-b" * 500, "word " * 20, "短"]
    fitted, counts, specials = fit_context_lines(lines, counting, 64)
    assert counts == count_tokens(fitted)
    assert all(n - specials <= 64 for n in counts)
    assert fitted[2:] == lines[2:]  # lines within the budget are kept as they are
    # Cut near the budget, not far below it (the search finds the longest cut that fits).
    assert all(n - specials >= 58 for n in counts[:2])
    assert len(calls) <= 8, calls


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.text(max_size=400),
    headings=st.lists(st.text(max_size=200), max_size=4),
    bodies=st.lists(st.text(min_size=1, max_size=1500), min_size=1, max_size=3),
    window=st.sampled_from([32, 64, 128, 256]),
    overlap_share=st.integers(0, 3),
)
def test_every_embedded_text_fits_whatever_the_text(count_tokens, title, headings, bodies, window,
                                                    overlap_share):
    overlap = (window // 2 - 1) * overlap_share // 4
    sections = tuple(Section(tuple(headings[: i + 1]), body) for i, body in enumerate(bodies))
    doc = Document(source="/kb/x.md", title=title, sections=sections)
    chunks = chunk_document(doc, count_tokens, check_config(window, overlap, 256))
    sections = normalize_document(doc).sections  # what is chunked is the normalized text
    if not chunks:
        assert all(not s.text.strip() for s in sections)
        return
    _fits(chunks, count_tokens, window)
    specials = count_tokens([""])[0]
    for section in sections:
        mine = [c for c in chunks if c.section == section.heading]
        if not section.text.strip() or len({s.heading for s in sections}) < len(sections):
            continue
        # Nothing lost: every non-space character of the section, in order (with no overlap).
        if overlap == 0:
            assert "".join(ch for c in mine for ch in c.text if not ch.isspace()) == \
                "".join(ch for ch in section.text if not ch.isspace())
        # Every body a meaningful share: two chunks in a row hold more than the body budget
        # (at least about 3/4 of the window, less the overlap), so there are never many tiny ones.
        tokens = count_tokens([section.text])[0] - specials
        budget = window - specials - context_budget(window) - overlap - 4
        assert len(mine) <= 2 * -(-max(tokens, 1) // budget) + 2, [c.text for c in mine]
