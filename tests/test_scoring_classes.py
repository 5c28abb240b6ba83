"""Scores and failure classes on hand-written answers (pure: no model), the absent task's refusals and
hallucinations in English and Korean, and the result rows built from them."""

from __future__ import annotations

import json

import pytest

from kanana_longctx.probes.spec import Probe
from kanana_longctx.results import ResultRecord, ResultsWriter, load_results
from kanana_longctx.backends.base import Generation
from kanana_longctx.run.records import record_of
from kanana_longctx.scoring import OUTCOMES, claimed_numbers, is_refusal, judge, outcome_counts, score_contains

A, B, C, D = "4827163", "9051337", "3318842", "7264015"


@pytest.mark.parametrize(
    "output, expected, distractors, truncated, outcome, score",
    [
        (f"The special magic number is {A}.", (A,), (), False, "found", 1.0),
        ("The number is 4,827,163.", (A,), (), False, "found", 1.0),
        (f"{A} (and also {B})", (A,), (B,), False, "found", 1.0),  # recall, as RULER scores it
        (f"The numbers are {A} and {C}.", (A, B, C, D), (), False, "partial", 0.5),
        (f"{A}, {B}, {C} and {D}", (A, B, C, D), (), True, "found", 1.0),
        (f"The special magic number for the key is {B}.", (A,), (B, C), False, "distractor", 0.0),
        (f"{B} and 5550123", (A,), (B,), False, "distractor", 0.0),
        ("The special magic number is 1234567.", (A,), (B,), False, "other_number", 0.0),
        ("It is 482716.", (A,), (), False, "other_number", 0.0),  # a miscopied value is a claimed number
        ("48271634", (A,), (), False, "other_number", 0.0),  # one digit too many is not the value
        ("There is no special magic number in the text.", (A,), (), False, "refusal", 0.0),
        ("", (A,), (), False, "empty", 0.0),
        ("   \n", (A,), (), True, "empty", 0.0),
        ("The special magic number mentioned in the", (A,), (), True, "truncated", 0.0),
        ("The special magic number mentioned in the text is", (A,), (), False, "no_answer", 0.0),
        ("I have 2 ideas about it.", (A,), (), False, "no_answer", 0.0),
    ],
)
def test_every_failure_class(output, expected, distractors, truncated, outcome, score):
    judged = judge(output, expected, distractors, "en", truncated)
    assert (judged.outcome, judged.score) == (outcome, score)
    assert judged.outcome in OUTCOMES
    assert set(judged.found) <= set(expected) and set(judged.named_distractors) <= set(distractors)


def test_found_values_and_named_distractors_are_recorded():
    judged = judge(f"{C}, then {B} and {A}", (A, D), (B, C), "en", False)
    assert judged.outcome == "partial" and judged.found == (A,) and judged.named_distractors == (B, C)
    assert judged.score == 0.5


def test_single_task_score_is_the_contains_score():
    for output in (f"It is {A}.", "4 827 163", f"{A}9", "nothing", f"x{A}x", f"1{A}"):
        assert judge(output, (A,), (), "en", False).score == score_contains(output, A)
    fixed = judge("You should eat a sandwich in Dolores Park.", ("eat a sandwich in Dolores Park",), (), "en", False)
    assert fixed.outcome == "found"


@pytest.mark.parametrize(
    "lang, output",
    [
        ("en", "none"),
        ("en", "None."),
        ("en", 'The answer is "none".'),
        ("en", "There is no special magic number for \u201camber lantern\u201d in the text."),
        ("en", "The text doesn\u2019t mention a number for that key."),
        ("en", "I couldn't find such a number."),
        ("en", "No such number is mentioned."),
        ("ko", "없음"),
        ("ko", "\"없음\""),
        ("ko", "글에는 \"호박색 등불\"의 특별한 마법의 숫자가 없습니다."),
        ("ko", "그런 숫자는 언급되지 않았습니다."),
        ("ko", "해당 숫자를 찾을 수 없어요."),
        ("ko", "none"),
    ],
)
def test_absent_refusals_score_one(lang, output):
    judged = judge(output, (), (), lang, False)
    assert (judged.outcome, judged.score) == ("refusal", 1.0)
    assert is_refusal(output, lang)


@pytest.mark.parametrize(
    "lang, output, distractors, outcome",
    [
        ("en", f"The special magic number for \"amber lantern\" is {A}.", (), "other_number"),
        ("en", f"None of them, but I think it is {A}.", (), "other_number"),  # a number beats the refusal
        ("en", f"It is {B}.", (B,), "distractor"),
        ("en", "The special magic number is", (), "no_answer"),
        ("en", "Nonetheless, the text is about maps.", (), "no_answer"),  # "none" as a whole word only
        ("ko", f"\"호박색 등불\"의 특별한 마법의 숫자는 {A}입니다.", (), "other_number"),
        ("ko", f"숫자는 {B}입니다.", (B,), "distractor"),
        ("ko", "글에서 언급된 특별한 마법의 숫자는", (), "no_answer"),
        ("ko", "", (), "empty"),
    ],
)
def test_absent_hallucinations_score_zero(lang, output, distractors, outcome):
    judged = judge(output, (), distractors, lang, False)
    assert (judged.outcome, judged.score) == (outcome, 0.0)


def test_claimed_numbers():
    assert claimed_numbers("2 keys, 1,234,567 and 98765 and 1234") == ["1234567", "98765"]


def result_record(probe, text, *, new_tokens, max_new_tokens, stopped, seconds, prefill_tokens):
    """The row the runner writes for a backend's answer (`stopped`: it ended at a stop, not at the budget)."""
    hit = new_tokens >= max_new_tokens and not stopped
    generation = Generation(probe, text, new_tokens, hit, seconds, prefill_tokens)
    return record_of(generation, max_new_tokens)


def _probe(**kwargs) -> Probe:
    base = dict(
        length=1000, depth=50.0, n_tokens=1000, needle_token_start=400, needle_token_end=420, expected=A,
        needle="n", question="q", prompt="p", form="qaform", lang="en", seed=0, haystack="h", haystack_hash="x",
    )
    return Probe(**{**base, **kwargs})


def test_result_rows_carry_task_repeat_outcome_and_values(tmp_path):
    probe = _probe(task="multikey", repeat=2, keys=("amber lantern",), expected_values=(A,),
                   distractor_values=(B, C, D))
    row = result_record(probe, f"It is {C}.", new_tokens=7, max_new_tokens=40, stopped=True, seconds=0.5,
                        prefill_tokens=600)
    assert (row.task, row.repeat, row.outcome, row.score, row.probe_id) == ("multikey", 2, "distractor", 0.0,
                                                                             "multikey-L1000-D50-R2")
    assert row.named_distractors == (C,) and row.distractor_values == (B, C, D) and row.max_new_tokens == 40
    cut = result_record(probe, "The special magic number for", new_tokens=40, max_new_tokens=40, stopped=False,
                        seconds=0.5, prefill_tokens=600)
    assert cut.outcome == "truncated"
    absent = result_record(_probe(task="absent", expected="none"), "none", new_tokens=2, max_new_tokens=30,
                           stopped=True, seconds=0.1, prefill_tokens=5)
    assert (absent.outcome, absent.score, absent.expected_values) == ("refusal", 1.0, ())
    with ResultsWriter(tmp_path / "results.jsonl") as writer:
        writer.append([row, cut, absent])
    records, _ = load_results(tmp_path)
    assert records == [row, cut, absent]
    old = ResultRecord.from_dict({**row.to_dict(), "outcome": ""})
    assert outcome_counts([*records, old]) == {"distractor": 1, "refusal": 1, "truncated": 1, "unscored": 1}


def test_rows_of_older_runs_still_load(tmp_path):
    old = {"probe_id": "L1000-D50", "length": 1000, "depth": 50.0, "score": 1.0, "expected": A, "output": A,
           "n_tokens": 1000, "needle_token_start": 400}
    (tmp_path / "results.jsonl").write_text(json.dumps(old) + "\n", encoding="utf-8")
    (record,), _ = load_results(tmp_path)
    assert (record.task, record.repeat, record.outcome, record.expected_values) == ("single", 0, "", ())
    assert ResultRecord.from_dict(record.to_dict()) == record
