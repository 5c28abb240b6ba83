"""Deterministic scoring of generated answers (pure, no torch): small metric functions.

Usage: score_contains("The magic number is 1,234,567.", "1234567")  # 1.0

Why not an LLM judge: judges mark correct but wordy answers wrong and are not reproducible (gkamradt #39).
`contains` (the default) gives 1.0 when the expected answer appears in the output after normalisation: Unicode
NFKC, case folding, whitespace collapsed, and for numeric answers digit-group separators ("1,234,567",
"1 234 567") removed, so a correct value in any common spelling counts and a different value never does.

`judge` scores an answer to any task (the share of the asked values it gives, or for an absent key whether it
refuses) and names its failure class, deterministically: found, partial, distractor, other_number, refusal,
empty, truncated, no_answer (OUTCOMES). The class is stored on every result row.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

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


# -- failure classes -------------------------------------------------------------------------------------------
OUTCOMES = ("found", "partial", "distractor", "other_number", "refusal", "empty", "truncated", "no_answer")
OUTCOME_TEXT = {
    "found": "every asked value given",
    "partial": "some of the asked values given",
    "distractor": "another needle's value, none of the asked ones",
    "other_number": "a number that is in no needle",
    "refusal": "says there is no such number",
    "empty": "no answer at all",
    "truncated": "cut off by max_new_tokens before any number",
    "no_answer": "words without a number or a refusal",
}
NUMBER_MIN_DIGITS = 5  # a claimed value: values have 7 digits; 5 or 6 is a miscopied one, "2 numbers" is not


@dataclass(frozen=True)
class Judgement:
    score: float  # share of the asked values given; for an absent needle 1.0 for a refusal
    outcome: str  # one of OUTCOMES
    found: tuple[str, ...] = ()  # asked values the answer gives
    named_distractors: tuple[str, ...] = ()  # values of other needles the answer gives


def number_runs(text: str) -> list[str]:
    """The digit runs of an answer, digit-group separators removed ("1,234,567" -> "1234567")."""
    return _digits_only_runs(normalize(text))


def claimed_numbers(text: str) -> list[str]:
    """The runs long enough to be a claimed value (NUMBER_MIN_DIGITS or more)."""
    return [run for run in number_runs(text) if len(run) >= NUMBER_MIN_DIGITS]


def _refusal_pattern(phrase: str) -> re.Pattern:
    """English phrases match as whole words ("none", not "nonetheless"); Korean stems anywhere in the text."""
    escaped = re.escape(phrase)
    return re.compile(rf"\b{escaped}\b" if phrase.isascii() else escaped)


_REFUSALS: dict[str, tuple[re.Pattern, ...]] = {}


def is_refusal(text: str, lang: str) -> bool:
    """Whether the answer says there is no such number, by the deterministic word list of `lang`."""
    from kanana_longctx.probes.languages import language_pack

    if lang not in _REFUSALS:
        _REFUSALS[lang] = tuple(_refusal_pattern(p) for p in language_pack(lang).refusals)
    folded = normalize(text).replace("\u2019", "'")
    return any(pattern.search(folded) for pattern in _REFUSALS[lang])


def judge(
    output: str, expected: tuple[str, ...], distractors: tuple[str, ...], lang: str, truncated: bool
) -> Judgement:
    """Score an answer and name its class. `expected`: the asked values (none: the asked key is absent and a
    refusal is right). Classes, first that applies: found / partial (asked values given), empty, distractor,
    other_number, refusal, truncated (used up its budget), no_answer."""
    found = tuple(v for v in expected if score_contains(output, v))
    named = tuple(v for v in distractors if score_contains(output, v))
    others = [r for r in claimed_numbers(output) if r not in expected and r not in distractors]
    if expected and found:
        outcome = "found" if len(found) == len(expected) else "partial"
        return Judgement(len(found) / len(expected), outcome, found, named)
    if not output.strip():
        outcome = "empty"
    elif named:
        outcome = "distractor"
    elif others:
        outcome = "other_number"
    elif is_refusal(output, lang):
        outcome = "refusal"
    elif truncated:
        outcome = "truncated"
    else:
        outcome = "no_answer"
    score = 1.0 if not expected and outcome == "refusal" else 0.0
    return Judgement(score, outcome, found, named)


def judge_probe(probe, output: str, truncated: bool) -> Judgement:
    """`judge` with the probe's own values and language."""
    return judge(output, tuple(probe.answers), tuple(probe.distractor_values), probe.lang, truncated)


def outcome_counts(records) -> dict[str, int]:
    """Rows per failure class, in OUTCOMES order (classes no row has are left out; rows of older runs, which have
    no class, count as "unscored")."""
    counts = {name: 0 for name in (*OUTCOMES, "unscored")}
    for record in records:
        counts[record.outcome or "unscored"] += 1
    return {name: n for name, n in counts.items() if n}
