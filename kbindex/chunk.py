"""Document -> Chunks, sized with the embedding model's own tokenizer. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kbindex.errors import UsageError
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
    """Split a document at sections, then paragraphs, lines, sentences and words."""
    specials = count_tokens([""])[0]
    doc_hash = doc.content_hash
    sid = source_id(doc.source)
    chunks: list[Chunk] = []
    for section in doc.sections:
        if not section.text.strip():
            continue
        heading = section.heading
        prefix = context_line(doc.title, heading)
        prefix_tokens = count_tokens([prefix])[0] - specials
        budget = config.chunk_tokens - specials - prefix_tokens
        pieces = _split(section.text, count_tokens, specials, budget, config.overlap)
        # Tokenizers that are not additive over whitespace could overshoot: re-check whole texts.
        texts = [f"{prefix}\n\n{p}" for p in pieces]
        counts = count_tokens(texts)
        final: list[str] = []
        for piece, n in zip(pieces, counts, strict=False):
            if n <= config.chunk_tokens:
                final.append(piece)
            else:
                final.extend(_split(piece, count_tokens, specials, budget - (n - config.chunk_tokens) - 4, 0))
        for piece in final:
            position = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{sid}-{position:05d}",
                    source=doc.source,
                    title=doc.title,
                    section=heading,
                    position=position,
                    text=piece,
                    embed_text=f"{prefix}\n\n{piece}",
                    doc_hash=doc_hash,
                    anchor=section.anchor,
                    metadata=dict(doc.metadata),
                )
            )
    return chunks


def _split(text: str, count_tokens: CountTokens, specials: int, budget: int, overlap: int) -> list[str]:
    budget = max(budget, 8)
    units = _units(text, count_tokens, specials, budget)
    return _pack(units, budget, overlap)


def _units(text: str, count_tokens: CountTokens, specials: int, budget: int) -> list[tuple[str, int, str]]:
    """(text, tokens, joiner) pieces each within budget, coarsest split that fits."""
    levels: list[tuple[Callable[[str], list[str]], str]] = [
        (lambda t: [p for p in _PARAGRAPHS.split(t) if p.strip()], "\n\n"),
        (lambda t: [p for p in t.split("\n") if p.strip()], "\n"),
        (lambda t: [p for p in _SENTENCES.split(t) if p.strip()], " "),
        (lambda t: t.split(), " "),
    ]

    def descend(pieces: list[str], joiner: str, level: int) -> list[tuple[str, int, str]]:
        counts = [n - specials for n in count_tokens(pieces)] if pieces else []
        out: list[tuple[str, int, str]] = []
        for piece, n in zip(pieces, counts, strict=False):
            if n <= budget:
                out.append((piece.strip("\n") if joiner != " " else piece.strip(), n, joiner))
            elif level < len(levels):
                split, sub_joiner = levels[level]
                parts = split(piece)
                if len(parts) <= 1:  # this level cannot split it: try a finer one
                    out.extend(descend([piece], joiner, level + 1))
                    continue
                sub = descend(parts, sub_joiner, level + 1)
                if sub:
                    sub[0] = (sub[0][0], sub[0][1], joiner)
                out.extend(sub)
            else:
                out.extend(_hard_split(piece, count_tokens, specials, budget, joiner))
        return out

    return descend([text], "\n\n", 0)


def _hard_split(word: str, count_tokens: CountTokens, specials: int, budget: int, joiner: str):
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


def _pack(units: list[tuple[str, int, str]], budget: int, overlap: int) -> list[str]:
    chunks: list[list[tuple[str, int, str]]] = []
    current: list[tuple[str, int, str]] = []
    size = 0
    for unit in units:
        if current and size + unit[1] > budget:
            chunks.append(current)
            carry: list[tuple[str, int, str]] = []
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


def _join(units: list[tuple[str, int, str]]) -> str:
    text = units[0][0]
    for piece, _, joiner in units[1:]:
        text += joiner + piece
    return text.strip()
