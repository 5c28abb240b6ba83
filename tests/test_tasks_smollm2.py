"""Every task on the real SmolLM2-135M-Instruct (CPU, English, 1-2K tokens): what is checked is that each row's
score and failure class agree with what the model actually wrote, not that the small model succeeds."""

from __future__ import annotations

import re

import pytest

from kanana_longctx.probes.build import ProbeRequest, build_probe_set
from kanana_longctx.probes.tasks import TASKS
from kanana_longctx.results import load_results, read_run_info
from kanana_longctx.options import RunOptions
from kanana_longctx.run.runner import execute
from kanana_longctx.scoring import OUTCOMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_loaded(smollm2_source):
    from kanana_longctx.backends.local import load_model

    return load_model(smollm2_source, RunOptions(device="cpu"))


def _numbers(text: str) -> set[str]:
    """Digit runs, read independently of the scorer: group commas and spaces between digit triples dropped."""
    return set(re.findall(r"\d+", re.sub(r"(?<=\d)[, ](?=\d{3}\b)", "", text)))


def check_row(row, probe) -> None:
    """The row's outcome and score follow from its output, its probe's values and its budget."""
    numbers = _numbers(row.output)
    expected, distractors = set(probe.expected_values), set(probe.distractor_values)
    given = expected & numbers
    claimed = {n for n in numbers if len(n) >= 5}
    assert row.outcome in OUTCOMES and row.max_new_tokens > 0
    assert set(row.found_values) == given and set(row.named_distractors) == distractors & numbers
    if expected:
        assert row.score == pytest.approx(len(given) / len(expected))
    else:
        assert row.score == (1.0 if row.outcome == "refusal" else 0.0)
    if row.outcome == "found":
        assert given == expected
    elif row.outcome == "partial":
        assert given and given != expected
    else:
        assert not given
        if row.outcome == "empty":
            assert not row.output.strip()
        elif row.outcome == "distractor":
            assert distractors & numbers
        elif row.outcome == "other_number":
            assert claimed - distractors and not distractors & numbers
        elif row.outcome in ("refusal", "truncated", "no_answer"):
            assert not claimed and row.output.strip()
            if row.outcome == "truncated":
                assert row.new_tokens == row.max_new_tokens


@pytest.mark.parametrize("task", TASKS)
def test_smollm2_answers_get_the_class_their_text_shows(task, smollm2_tokenizer, smollm2_loaded, tmp_path):
    request = ProbeRequest(lengths=(1000, 2000), depths=(0, 60), task=task)
    probe_set = build_probe_set(request, smollm2_tokenizer)
    options = RunOptions(max_new_tokens=probe_set.max_new_tokens)  # the budget the runner derives from the probes
    execute(probe_set, options, tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    records, warnings = load_results(tmp_path)
    assert not warnings and len(records) == len(probe_set.probes)
    by_id = {p.probe_id: p for p in probe_set.probes}
    for row in records:
        probe = by_id[row.probe_id]
        assert (row.task, row.repeat, row.keys, row.max_new_tokens) == (task, 0, probe.keys, probe_set.max_new_tokens)
        assert row.expected_values == probe.answers and row.distractor_values == probe.distractor_values
        check_row(row, probe)
    assert read_run_info(tmp_path).max_new_tokens == probe_set.max_new_tokens
    outcomes = [r.outcome for r in records]
    print(task, outcomes, [r.output for r in records])  # shown with -s: what the small model did
    if task == "single":
        assert outcomes.count("found") >= len(records) // 2  # it finds single needles at these lengths


def test_a_budget_too_small_is_reported_as_truncated(smollm2_tokenizer, smollm2_loaded, tmp_path):
    request = ProbeRequest(lengths=(1000,), depths=(50,), task="multiquery")
    probe_set = build_probe_set(request, smollm2_tokenizer)
    execute(probe_set, RunOptions(max_new_tokens=3), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    (row,), _ = load_results(tmp_path)
    check_row(row, probe_set.probes[0])
    assert row.new_tokens == 3 and row.outcome in ("truncated", "partial", "other_number", "no_answer")
    if not _numbers(row.output):
        assert row.outcome == "truncated"
