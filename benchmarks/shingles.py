"""The shingle metric of the article-extraction benchmark, written out so it can be tested.

Text -> lower-cased ``\\w+`` tokens -> word 4-grams counted as a multiset. Per page, precision is
the share of extracted shingles found in the ground truth and recall the share of ground-truth
shingles extracted; both are averaged over pages and F1 is computed from the two averages.
A text of 1-3 tokens is one (short) shingle, so tiny texts still count.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+")
N = 4


def tokens(text: str) -> list[str]:
    return _TOKEN.findall((text or "").lower())


def shingles(text: str, n: int = N) -> Counter:
    """Word n-grams of a text, with their counts."""
    words = tokens(text)
    if not words:
        return Counter()
    return Counter(tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1)))


def precision_recall(expected: str, extracted: str, n: int = N) -> tuple[float, float]:
    """Precision and recall of one page; an empty page against an empty truth scores 1, 1."""
    truth, got = shingles(expected, n), shingles(extracted, n)
    if not truth and not got:
        return 1.0, 1.0
    overlap = sum((truth & got).values())
    if overlap == 0:
        return 0.0, 0.0
    return overlap / sum(got.values()), overlap / sum(truth.values())


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    pages: int

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def score(pairs: Iterable[tuple[str, str]], n: int = N) -> Score:
    """Average precision and recall over (expected, extracted) pairs."""
    results = [precision_recall(expected, extracted, n) for expected, extracted in pairs]
    if not results:
        return Score(0.0, 0.0, 0)
    return Score(
        sum(p for p, _ in results) / len(results),
        sum(r for _, r in results) / len(results),
        len(results),
    )
