"""The deterministic scorer: a correct value in any common spelling counts, a different value never does."""

from __future__ import annotations

import pytest

from kanana_longctx.scoring import normalize, score_contains


@pytest.mark.parametrize(
    "output, expected",
    [
        ("The special magic number is 4829173.", "4829173"),
        ("4,829,173", "4829173"),
        ("4 829 173 is the answer", "4829173"),
        ("4.829.173", "4829173"),
        ("４８２９１７３", "4829173"),  # full-width digits (NFKC)
        ("특별한 마법의 숫자는 4829173입니다", "4829173"),
        ("The CAPITAL of France is  Paris", "capital of france"),
    ],
)
def test_correct_answers_in_any_spelling_count(output, expected):
    assert score_contains(output, expected) == 1.0


@pytest.mark.parametrize(
    "output, expected",
    [
        ("48291735", "4829173"),  # the value inside a longer number is another number
        ("14829173", "4829173"),
        ("4829172", "4829173"),
        ("", "4829173"),
        ("anything", ""),  # nothing expected: nothing can match
        ("the number is 482 9173", "4829173"),  # not a digit-group spelling
    ],
)
def test_other_values_and_empty_answers_score_zero(output, expected):
    assert score_contains(output, expected) == 0.0


def test_normalize_folds_case_width_and_spaces():
    assert normalize("  Ａ  b\tC\n") == "a b c"
