"""Document -> Chunks, sized with the embedding model's own tokenizer. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kbindex.errors import UsageError
from kbindex.normalize import normalize_document
from kbindex.records import Chunk, Document, text_hash

CountTokens = Callable[[Sequence[str]], list[int]]

_PARAGRAPHS = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? followed by space and an upper-case letter, digit or quote.
_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
MAX_PREFIX_WORDS = 24


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk size and overlap in tokens; size counts special tokens and the context line."""

    chunk_tokens: int
    overlap: int

    def signature(self) -> str:
        return f"{self.chunk_tokens}/{self.overlap}"


def check_config(chunk_tokens: int, overlap: int, max_tokens: int) -> ChunkConfig:
    """Validate sizes against the model's window; never let the model truncate silently."""
    if chunk_tokens > max_tokens:
        raise UsageError(
            f"--chunk-tokens {chunk_tokens} exceeds the model's limit of {max_tokens} tokens "
            "(the model would silently drop the rest); use at most that"
        )
    if chunk_tokens < 32:
        raise UsageError(f"--chunk-tokens {chunk_tokens} is too small: use at least 32")
    if overlap < 0 or overlap >= chunk_tokens // 2:
        raise UsageError(
            f"--overlap {overlap} must be at least 0 and less than half of --chunk-tokens"
        )
    return ChunkConfig(chunk_tokens, overlap)


def source_id(source: str) -> str:
    """Short stable id of a source, the stem of its chunk ids."""
    return text_hash(source)[:16]


def context_line(title: str, section: str) -> str:
    """The "Title > Section > Subsection" line embedded in front of a chunk."""
    line = f"{title} > {section}" if section else title
    words = line.split()
    return " ".join(words[:MAX_PREFIX_WORDS])


def chunk_document(doc: Document, count_tokens: CountTokens, config: ChunkConfig) -> list[Chunk]:
    """Split a document at sections, then paragraphs, lines, sentences and words.

    The tokenizer is called a few times per document, each time on every text it must measure at
    that step (it costs per call as well as per token): the context lines, then each level of
    splitting for all sections at once, then every finished chunk.
    """
    doc_hash = doc.content_hash  # of the text as extracted, which the ledger compares with
    # What is embedded, keyword-indexed and stored is the normalized text (kbindex.normalize).
    doc = normalize_document(doc)
    sections = [s for s in doc.sections if s.text.strip()]
    if not sections:
        return []
    prefixes = [context_line(doc.title, s.heading) for s in sections]
    counted = count_tokens(["", *prefixes])
    specials = counted[0]
    # What a section's text may use: the window less the special tokens and its context line.
    budgets = [config.chunk_tokens - n for n in counted[1:]]
    split = _split_many([s.text for s in sections], count_tokens, specials, budgets, config.overlap)
    # Tokenizers that are not additive over whitespace could overshoot: re-check whole texts.
    texts = [f"{prefix}\n\n{p}" for prefix, pieces in zip(prefixes, split, strict=True) for p in pieces]
    counts = iter(count_tokens(texts))
    sid = source_id(doc.source)
    chunks: list[Chunk] = []
    for section, prefix, budget, pieces in zip(sections, prefixes, budgets, split, strict=True):
        final: list[str] = []
        for piece in pieces:
            n = next(counts)
            if n <= config.chunk_tokens:
                final.append(piece)
            else:
                final.extend(_split_many([piece], count_tokens, specials,
                                         [budget - (n - config.chunk_tokens) - 4], 0)[0])
        for piece in final:
            position = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{sid}-{position:05d}",
                    source=doc.source,
                    title=doc.title,
                    section=section.heading,
                    position=position,
                    text=piece,
                    embed_text=f"{prefix}\n\n{piece}",
                    doc_hash=doc_hash,
                    anchor=section.anchor,
                    metadata=dict(doc.metadata),
                )
            )
    return chunks


def _split_many(texts: Sequence[str], count_tokens: CountTokens, specials: int, budgets: Sequence[int],
                overlap: int) -> list[list[str]]:
    """Each text cut into pieces of at most its budget of tokens, overlapping by about `overlap`."""
    budgets = [max(b, 8) for b in budgets]
    return [_pack(units, budget, overlap)
            for units, budget in zip(_units_many(texts, count_tokens, specials, budgets), budgets, strict=True)]


# Finer and finer ways to cut a text that is over budget, each with the joiner that puts the
# pieces back together.
_LEVELS: list[tuple[Callable[[str], list[str]], str]] = [
    (lambda t: [p for p in _PARAGRAPHS.split(t) if p.strip()], "\n\n"),
    (lambda t: [p for p in t.split("\n") if p.strip()], "\n"),
    (lambda t: [p for p in _SENTENCES.split(t) if p.strip()], " "),
    (lambda t: t.split(), " "),
]

Unit = tuple[str, int, str]  # (text, tokens, joiner to the unit before it)


@dataclass
class _Piece:
    text: str
    joiner: str
    level: int  # the first of _LEVELS to try if it is over budget
    budget: int
    units: list[Unit] | None = None  # when it is kept whole or cut by characters
    parts: list[_Piece] | None = None  # when it is cut at a level


def _units_many(texts: Sequence[str], count_tokens: CountTokens, specials: int,
                budgets: Sequence[int]) -> list[list[Unit]]:
    """Each text as units within its budget: the coarsest cut that fits, piece by piece.

    Breadth first, so that each level is one tokenizer call for all texts. A piece with more
    words than its budget has tokens cannot fit (every tokenizer makes at least one token of a
    word) and is cut without being measured.
    """
    roots = [_Piece(t, "\n\n", 0, b) for t, b in zip(texts, budgets, strict=True)]
    todo = roots
    while todo:
        measure = [p for p in todo if len(p.text.split()) <= p.budget]
        sizes = {id(p): n - specials for p, n in zip(measure, count_tokens([p.text for p in measure])
                                                        if measure else [], strict=True)}
        after: list[_Piece] = []
        for piece in todo:
            n = sizes.get(id(piece))
            if n is not None and n <= piece.budget:
                text = piece.text.strip("\n") if piece.joiner != " " else piece.text.strip()
                piece.units = [(text, n, piece.joiner)]
                continue
            for level in range(piece.level, len(_LEVELS)):
                cut, joiner = _LEVELS[level]
                parts = cut(piece.text)
                if len(parts) > 1:
                    piece.parts = [_Piece(p, joiner, level + 1, piece.budget) for p in parts]
                    after.extend(piece.parts)
                    break
            else:  # one "word" longer than the budget
                piece.units = _hard_split(piece.text, count_tokens, specials, piece.budget, piece.joiner)
        todo = after
    return [_flatten(root) for root in roots]


def _flatten(piece: _Piece) -> list[Unit]:
    if piece.units is not None:
        return piece.units
    out = [unit for part in piece.parts for unit in _flatten(part)]
    if out:  # the first unit is joined to what came before this piece as the piece was
        out[0] = (out[0][0], out[0][1], piece.joiner)
    return out


def _hard_split(word: str, count_tokens: CountTokens, specials: int, budget: int, joiner: str) -> list[Unit]:
    """A single "word" longer than the budget (a base64 blob, a long URL): cut by characters."""
    out = []
    rest = word
    while rest:
        size = len(rest)
        while size > 1 and count_tokens([rest[:size]])[0] - specials > budget:
            size = max(1, size * 3 // 4)
        out.append((rest[:size], count_tokens([rest[:size]])[0] - specials, joiner))
        joiner = ""
        rest = rest[size:]
    return out


def _pack(units: list[Unit], budget: int, overlap: int) -> list[str]:
    chunks: list[list[Unit]] = []
    current: list[Unit] = []
    size = 0
    for unit in units:
        if current and size + unit[1] > budget:
            chunks.append(current)
            carry: list[Unit] = []
            carried = 0
            for prev in reversed(current[1:] if len(current) > 1 else []):
                if carried + prev[1] > overlap or carried + prev[1] + unit[1] > budget:
                    break
                carry.insert(0, prev)
                carried += prev[1]
            current, size = carry, carried
        current.append(unit)
        size += unit[1]
    if current:
        chunks.append(current)
    return [_join(c) for c in chunks]


def _join(units: list[Unit]) -> str:
    text = units[0][0]
    for piece, _, joiner in units[1:]:
        text += joiner + piece
    return text.strip()
