"""The benchmark's shingle metric on cases worked out by hand."""

from collections import Counter

import pytest

from benchmarks.shingles import precision_recall, score, shingles


def test_shingles_are_lowercased_word_4grams_with_counts():
    assert shingles("The cat, the CAT sat!") == Counter({
        ("the", "cat", "the", "cat"): 1,
        ("cat", "the", "cat", "sat"): 1,
    })
    assert shingles("a b a b a b a") == Counter({("a", "b", "a", "b"): 2, ("b", "a", "b", "a"): 2})


def test_short_and_empty_texts():
    assert shingles("just three words") == Counter({("just", "three", "words"): 1})
    assert shingles("  ...  ") == Counter()


def test_precision_and_recall_of_one_page():
    truth = "one two three four five six"  # 3 shingles: 1234 2345 3456
    extracted = "one two three four five seven eight"  # 4 shingles: 1234 2345 3457 4578
    precision, recall = precision_recall(truth, extracted)
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 3)


def test_repeated_text_counts_once_per_occurrence_in_the_truth():
    truth = "alpha beta gamma delta"
    precision, recall = precision_recall(truth, "alpha beta gamma delta alpha beta gamma delta")
    # extracted: abgd, bgda, gdab, dabg, abgd -> 5 shingles, 1 of them matches the truth's one
    assert (precision, recall) == (pytest.approx(1 / 5), 1.0)


def test_empty_cases():
    assert precision_recall("", "") == (1.0, 1.0)
    assert precision_recall("some real article text here", "") == (0.0, 0.0)
    assert precision_recall("", "menu text of a page") == (0.0, 0.0)


def test_scores_average_per_page_then_f1_from_the_averages():
    pages = [
        ("one two three four five six", "one two three four five seven eight"),  # P 0.5, R 2/3
        ("a b c d", "a b c d"),  # P 1, R 1
    ]
    result = score(pages)
    assert result.pages == 2
    assert result.precision == pytest.approx(0.75)
    assert result.recall == pytest.approx((2 / 3 + 1) / 2)
    p, r = 0.75, (2 / 3 + 1) / 2
    assert result.f1 == pytest.approx(2 * p * r / (p + r))
