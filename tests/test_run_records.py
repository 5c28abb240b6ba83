"""From a backend's generation to the scored record: cleaning per form, scoring, rounding, the backend's extras,
and the sink that appends and reports them."""

from __future__ import annotations

import pytest

from kanana_longctx.backends.base import Generation
from kanana_longctx.probes.spec import Probe
from kanana_longctx.results import ResultsWriter, load_results
from kanana_longctx.run.records import RecordSink, clean_output, record_of


def _probe(form: str = "qaform", depth: float = 50.0) -> Probe:
    return Probe(
        length=1000, depth=depth, n_tokens=1000, needle_token_start=400, needle_token_end=420, expected="4829173",
        needle="n", question="q", prompt="p", form=form, lang="en", seed=3, haystack="noise:en", haystack_hash="h",
    )


@pytest.mark.parametrize(
    "text, form, cleaned",
    [
        ("  4829173\nand then some more", "retform", "4829173"),
        ("\n\n 4829173.\nThe end", "retform", "4829173."),  # leading breaks are not the end of the answer
        ("4829173", "retform", "4829173"),
        ("  The number is\n4829173.  ", "qaform", "The number is\n4829173."),  # qaform keeps its lines
        ("", "retform", ""),
    ],
)
def test_clean_output_per_form(text, form, cleaned):
    assert clean_output(text, form) == cleaned


def test_a_retform_answer_after_the_first_line_does_not_count():
    probe = _probe("retform")
    wrong = record_of(Generation(probe, " 1111111\n4829173", 5, False, 0.1, 1000))
    right = record_of(Generation(probe, " 4829173\n1111111", 5, False, 0.1, 1000))
    assert (wrong.score, wrong.output) == (0.0, "1111111")
    assert (right.score, right.output) == (1.0, "4829173")


def test_record_fields_come_from_the_probe_and_the_generation():
    probe = _probe()
    record = record_of(Generation(probe, " 4,829,173 ", 7, True, 0.123456, 380, extras={"retries": 1}))
    assert record.probe_id == "L1000-D50" and record.score == 1.0 and record.output == "4,829,173"
    assert (record.new_tokens, record.prefill_tokens, record.seconds) == (7, 380, 0.1235)
    assert (record.needle_token_start, record.needle_token_end, record.seed, record.haystack) == (400, 420, 3, "noise:en")
    assert record.extra == {"retries": 1}
    assert "extra" in record.to_dict()
    assert "extra" not in record_of(Generation(probe, "x", 1, False, 0.0, 1)).to_dict()  # rows unchanged without


def test_the_sink_appends_a_batch_durably_and_reports_each_record(tmp_path):
    advanced, notes = [], []
    reporter = type("R", (), {"advance": lambda self, r: advanced.append(r.probe_id),
                              "note": lambda self, m: notes.append(m)})()
    with ResultsWriter(tmp_path / "results.jsonl") as writer:
        sink = RecordSink(writer, reporter)
        sink.write([Generation(_probe(depth=d), "4829173", 1, False, 0.0, 1) for d in (0.0, 100.0)])
        sink.note("hello")
    records, warnings = load_results(tmp_path)
    assert [r.probe_id for r in records] == advanced == ["L1000-D0", "L1000-D100"] and not warnings
    assert notes == ["hello"]
