import pytest
from tokenizers import Tokenizer

from kbindex.chunk import check_config, chunk_document
from kbindex.embed import packaged_model_path
from kbindex.errors import UsageError
from kbindex.records import Document, Section


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
