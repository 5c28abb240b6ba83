"""Deterministic scoring of generated answers (pure, no torch): small metric functions.

Usage: score_contains("The magic number is 1,234,567.", "1234567")  # 1.0

Why not an LLM judge: judges mark correct but wordy answers wrong and are not reproducible (gkamradt #39).
`contains` (the default) gives 1.0 when the expected answer appears in the output after normalisation: Unicode
NFKC, case folding, whitespace collapsed, and for numeric answers digit-group separators ("1,234,567",
"1 234 567") removed, so a correct value in any common spelling counts and a different value never does.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
_DIGIT_SEPARATORS = re.compile(r"(?<=\d)[,\s.'_\u00a0\u202f](?=\d{3}(?!\d))")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", text).strip()


def _digits_only_runs(text: str) -> list[str]:
    return re.findall(r"\d+", _DIGIT_SEPARATORS.sub("", text))


def score_contains(output: str, expected: str) -> float:
    """1.0 if `expected` occurs in `output` (normalised); numeric answers must match a whole digit run."""
    exp = normalize(expected)
    if not exp:
        return 0.0
    out = normalize(output)
    if exp.isdigit():
        return 1.0 if exp in _digits_only_runs(out) else 0.0
    return 1.0 if exp in out else 0.0


SCORER_LABELS = {"contains": "exact match"}  # what run.json calls the scorer
