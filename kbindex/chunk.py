"""Document -> Chunks, sized with the embedding model's own tokenizer. Pure: no I/O."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kbindex.errors import UsageError
from kbindex.normalize import normalize_document
from kbindex.records import Chunk, Document, text_hash

CountTokens = Callable[[Sequence[str]], list[int]]

_PARAGRAPHS = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? followed by space and an upper-case letter, digit or quote.
_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
MAX_PREFIX_WORDS = 24  # keeps the line readable; the hard bound is CONTEXT_SHARE, in tokens
# The context line may take at most 1/CONTEXT_SHARE of a chunk's tokens, so the chunk itself always
# keeps at least three quarters of the window. A long title or heading path (a notice title of 184
# CJK characters is 185 tokens; a URL is a token per punctuation mark) is shortened to fit.
CONTEXT_SHARE = 4
ELLIPSIS = "\u2026"  # marks a shortened context line
# Rounds of the search for where to shorten a context line (each one tokenizer call for all the
# lines of a document): interpolation on token counts lands within a character or two in 2-4.
_CUT_ROUNDS = 8
# A chunk that is still over the window after this many re-splits is cut by characters.
_FIT_ROUNDS = 4


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
    """The "Title > Section > Subsection" line embedded in front of a chunk (not yet shortened
    to its token budget: chunk_document does that, see fit_context_lines)."""
    line = f"{title} > {section}" if section else title
    words = line.split()
    return " ".join(words[:MAX_PREFIX_WORDS])


def context_budget(chunk_tokens: int) -> int:
    """The most tokens (special tokens not counted) a context line may take in a chunk."""
    return chunk_tokens // CONTEXT_SHARE


def fit_context_lines(lines: Sequence[str], count_tokens: CountTokens,
                      budget: int) -> tuple[list[str], list[int], int]:
    """Each line shortened, where needed, to at most `budget` tokens, ending in an ellipsis.

    Returns the lines, their token counts (special tokens included) and the special tokens a
    text gets. The cut is at a pre-token boundary (whitespace, punctuation or a CJK character,
    where BERT-style tokenizers always split) when one is near, else between characters (one
    unbroken run such as a long URL path). The tokenizer is called once for all lines, then once
    per search round for the lines that are too long.
    """
    unique = list(dict.fromkeys(lines))
    counted = count_tokens(["", *unique])
    specials = counted[0]
    fitted = {line: (line, n) for line, n in zip(unique, counted[1:], strict=True)}
    over = [line for line in unique if fitted[line][1] - specials > budget]
    if over:
        for line, result in zip(over, _shorten(over, [fitted[x][1] for x in over], count_tokens,
                                               specials, budget), strict=True):
            fitted[line] = result
    return [fitted[x][0] for x in lines], [fitted[x][1] for x in lines], specials


def refit_context(chunks: Sequence[Chunk], count_tokens: CountTokens, max_tokens: int) -> list[Chunk]:
    """Chunks whose embedded text is rebuilt from their title and section (an imported export
    holds no embedded text) with the context line cut as chunk_document cuts it: to the share of
    the window of the chunk size the chunk was made with (its `chunking` metadata, "256/32"),
    else of `max_tokens`.
    """
    budgets = []
    for chunk in chunks:
        size, _, _ = str(chunk.metadata.get("chunking") or "").partition("/")
        budgets.append(context_budget(int(size) if size.isdigit() else max_tokens))
    out: list[Chunk] = []
    for budget in sorted(set(budgets)):
        group = [i for i, b in enumerate(budgets) if b == budget]
        lines, _, _ = fit_context_lines([context_line(chunks[i].title, chunks[i].section) for i in group],
                                        count_tokens, budget)
        out.extend((i, replace(chunks[i], embed_text=f"{line}\n\n{chunks[i].text}"))
                   for i, line in zip(group, lines, strict=True))
    return [chunk for _, chunk in sorted(out, key=lambda pair: pair[0])]


def _shorten(lines: Sequence[str], counts: Sequence[int], count_tokens: CountTokens, specials: int,
             budget: int) -> list[tuple[str, int]]:
    """The longest cut of each line (with the ellipsis) within budget, and its token count.

    A bracketing search over character positions, all lines at once: `lo` always fits, `hi`
    never does; the next guess interpolates the token counts at both ends (a bisection guard
    keeps the bracket shrinking).
    """
    # An empty cut is only the ellipsis, which always fits a budget of at least 8 tokens.
    empty = count_tokens([ELLIPSIS])[0]
    state = [[0, len(line), empty, n, (ELLIPSIS, empty)] for line, n in zip(lines, counts, strict=True)]
    for _ in range(_CUT_ROUNDS):
        active = [(i, st) for i, st in enumerate(state) if st[1] - st[0] > 1]
        if not active:
            break
        guesses = []
        for _, (lo, hi, n_lo, n_hi, _best) in active:
            target = budget + specials
            guess = lo + (hi - lo) * (target - n_lo) // max(1, n_hi - n_lo)
            margin = max(1, (hi - lo) // 8)  # never too near an end, so the bracket shrinks
            guesses.append(min(max(guess, lo + margin), hi - margin) if hi - lo > 2 else lo + 1)
        texts = [_cut(lines[i], p) for (i, _), p in zip(active, guesses, strict=True)]
        for (_, st), p, text, n in zip(active, guesses, texts, count_tokens(texts), strict=True):
            if n - specials <= budget:
                st[0], st[2] = p, n
                if len(text) >= len(st[4][0]):
                    st[4] = (text, n)
            else:
                st[1], st[3] = p, n
    return [st[4] for st in state]


def _cut(line: str, end: int) -> str:
    """line[:end] moved back to a pre-token boundary when one is in its last quarter, + ellipsis."""
    at = end
    while at > end * 3 // 4 and at > 0 and not _boundary(line, at):
        at -= 1
    if at <= end * 3 // 4:  # one long run of word characters: cut between characters
        at = end
    return line[:at].rstrip() + ELLIPSIS


def _boundary(text: str, at: int) -> bool:
    """Whether a BERT-style pre-tokenizer splits between text[at-1] and text[at]."""
    if at >= len(text):
        return True
    return any(c.isspace() or unicodedata.category(c)[0] in "PS" or _is_cjk(c)
               for c in (text[at - 1], text[at]))


def _is_cjk(char: str) -> bool:
    """CJK ideographs, which BERT's tokenizer makes one token each (its _is_chinese_char ranges)."""
    cp = ord(char)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def chunk_document(doc: Document, count_tokens: CountTokens, config: ChunkConfig) -> list[Chunk]:
    """Split a document at sections, then paragraphs, lines, sentences and words.

    Every chunk's embedded text (its context line, a blank line, the chunk) is at most
    `config.chunk_tokens` tokens, special tokens included: the context line is first shortened
    to its share of the window (context_budget), then every finished text is measured and any
    that a non-additive tokenizer pushed over is split again.

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
    prefixes, counted, specials = fit_context_lines(
        [context_line(doc.title, s.heading) for s in sections], count_tokens,
        context_budget(config.chunk_tokens))
    # What a section's text may use: the window less the special tokens and its context line.
    budgets = [config.chunk_tokens - n for n in counted]
    split = _split_many([s.text for s in sections], count_tokens, specials, budgets, config.overlap)
    split = _fit_window(prefixes, budgets, split, count_tokens, specials, config.chunk_tokens)
    sid = source_id(doc.source)
    chunks: list[Chunk] = []
    for section, prefix, pieces in zip(sections, prefixes, split, strict=True):
        for piece in pieces:
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


def _fit_window(prefixes: Sequence[str], budgets: Sequence[int], split: list[list[str]],
                count_tokens: CountTokens, specials: int, window: int) -> list[list[str]]:
    """Every piece measured with its context line, as embedded; any over the window split again.

    Pieces are packed from units measured alone, and a tokenizer that is not additive (a word cut
    by characters, joined back) can overshoot. Each round is one tokenizer call for all pieces.
    """
    split = [list(pieces) for pieces in split]
    todo = [(s, i) for s, pieces in enumerate(split) for i in range(len(pieces))]
    for round_ in range(_FIT_ROUNDS + 2):
        if not todo:
            break
        counts = count_tokens([f"{prefixes[s]}\n\n{split[s][i]}" for s, i in todo])
        over = [(s, i, n - window) for (s, i), n in zip(todo, counts, strict=True) if n > window]
        if not over:
            break
        # Replace each piece that is over by its re-split parts, from the end so indexes hold.
        replaced: dict[int, list[tuple[int, int]]] = {}
        for s, i, excess in sorted(over, reverse=True):
            budget = max(1, budgets[s] - excess - 4 * (round_ + 1))
            if round_ >= _FIT_ROUNDS:  # a tokenizer far from additive: cut by characters
                parts = [u[0] for u in _hard_split(split[s][i], count_tokens, specials, budget, "")]
            else:
                parts = _split_many([split[s][i]], count_tokens, specials, [budget], 0)[0]
            split[s][i:i + 1] = parts
            replaced.setdefault(s, []).append((i, len(parts)))
        # The new parts are measured next round; indexes after a replacement shift.
        todo = []
        for s, spans in replaced.items():
            shift = 0
            for i, length in sorted(spans):
                todo.extend((s, i + shift + k) for k in range(length))
                shift += length - 1
    return split


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
    if len(out) > 1 and out[-1][1] < budget // 4:
        # A last piece of a few characters would become a chunk of its own at the end of a
        # section: share the last two pieces' characters evenly instead, when both halves fit.
        (a, _, a_joiner), (b, _, _) = out[-2], out[-1]
        both = a + b
        half = len(both) // 2
        n_first, n_second = (n - specials for n in count_tokens([both[:half], both[half:]]))
        if n_first <= budget and n_second <= budget:
            out[-2:] = [(both[:half], n_first, a_joiner), (both[half:], n_second, "")]
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
