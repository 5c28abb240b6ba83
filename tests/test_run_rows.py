"""Rows must match their run: resume counts a row as done only when its own record (seed, language, form,
haystack, task, answer budget, grid cell) matches run.json; plot drops rows of another configuration and repeated
rows of one probe, each with a warning (the runner's summary reads its rows through the same select_rows)."""

from __future__ import annotations

import json

import pytest

from kanana_longctx.results import (
    ResultRecord, ResultsWriter, RunInfo, load_results, row_mismatch, select_rows, write_run_info,
)
from kanana_longctx.run.rundir import prepare_out_dir, row_warnings
from test_plot_support import one_error_line, plot, write_run

RUN = {"model": "m", "form": "qaform", "lang": "en", "haystack": "noise:en", "haystack_hash": "h", "seed": 0,
       "yarn": None, "max_new_tokens": 20,
       "grid": {"lengths": [500, 1000], "depths": [0.0, 50.0], "task": "single", "repeats": 2}}


def row(probe_id: str = "L500-D0", **changes) -> ResultRecord:
    fields = dict(probe_id=probe_id, length=500, depth=0.0, score=1.0, expected="1234567", output="1234567",
                  n_tokens=500, needle_token_start=0, seed=0, form="qaform", lang="en", haystack="noise:en",
                  task="single", max_new_tokens=20)
    return ResultRecord(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"seed": 7}, "seed 7, not 0"),
        ({"lang": "ko"}, "lang 'ko', not 'en'"),
        ({"form": "retform"}, "form 'retform', not 'qaform'"),
        ({"haystack": "builtin:en"}, "haystack 'builtin:en', not 'noise:en'"),
        ({"task": "multikey"}, "task 'multikey', not 'single'"),
        ({"max_new_tokens": 64}, "max_new_tokens 64, not 20"),
        ({"length": 2000}, "length 2000, not in the grid"),
        ({"depth": 25.0}, "depth 25, not in the grid"),
        ({"repeat": 2}, "repeat 2, past the grid's 2"),
    ],
)
def test_a_row_of_another_configuration_says_what_differs(changes, why):
    assert row_mismatch(row(**changes), RUN) == why
    assert row_mismatch(row(), RUN) == ""


def test_what_run_json_or_an_older_row_does_not_say_is_not_held_against_the_row():
    partial = {"model": "m", "form": "qaform"}  # a hand-written run.json plot accepts
    assert row_mismatch(row(seed=7, lang="ko", length=99), partial) == ""
    older = row(lang="", haystack="", max_new_tokens=0)  # rows written before these fields were recorded
    assert row_mismatch(older, RUN) == ""


def _write(path, records):
    with ResultsWriter(path) as writer:
        writer.append(records)


def test_resume_counts_only_rows_of_its_configuration_and_says_what_it_ignored(tmp_path):
    info = RunInfo(**RUN)
    write_run_info(tmp_path, info)
    _write(tmp_path / "results.jsonl", [row("L500-D0"), row("L500-D50", depth=50.0, seed=7), row("L500-D0")])
    _write(tmp_path / "results.rank1.jsonl", [row("L1000-D0", length=1000, lang="ko")])
    assert prepare_out_dir(tmp_path, info, overwrite=False) == {"L500-D0"}
    warnings = row_warnings(tmp_path, info)
    assert any("ignored 1 row(s) of another configuration than run.json's (L500-D50: seed 7, not 0)" in w
               for w in warnings), warnings
    assert any("results.rank1.jsonl: ignored 1 row(s)" in w and "lang 'ko'" in w for w in warnings), warnings
    assert any("dropped 1 duplicate row(s)" in w for w in warnings), warnings


def test_select_rows_keeps_the_first_of_repeated_rows_and_drops_foreign_ones(tmp_path):
    first, again, foreign = row(score=1.0), row(score=0.0), row("L500-D50", depth=50.0, seed=3)
    kept, warnings = select_rows([first, foreign, again], RUN, tmp_path / "results.jsonl")
    assert kept == [first] and len(warnings) == 2
    assert select_rows([first, again], None, tmp_path)[0] == [first]  # without run.json: repeats still go


def test_plot_drops_rows_of_another_seed_and_duplicates_with_warnings(tmp_path):
    run = write_run(tmp_path / "run", [1000, 2000], [0.0, 100.0], score=lambda length, depth: 1.0)
    foreign = {"probe_id": "L1000-D0", "length": 1000, "depth": 0.0, "score": 0.0, "seed": 9, "form": "qaform"}
    duplicate = {"probe_id": "L2000-D100", "length": 2000, "depth": 100.0, "score": 0.0, "form": "qaform"}
    with open(run / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(foreign) + "\n" + json.dumps(duplicate) + "\n")
    result = plot(str(run), "--out", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert "ignored 1 row(s) of another configuration than run.json's (L1000-D0: seed 9, not 0)" in result.stderr
    assert "dropped 1 duplicate row(s)" in result.stderr
    assert "mean score 1.000 over 4/4 cells (4 probes, 1 per cell)" in result.stdout  # the 0-scored strays are out


def test_plot_refuses_a_run_whose_rows_are_all_of_another_configuration(tmp_path):
    run = write_run(tmp_path / "run", [1000], [0.0, 100.0])
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "form": "retform"}))
    line = one_error_line(plot(str(run), "--out", str(tmp_path / "plots")))
    assert "no result rows of run.json's configuration" in line and "form 'qaform', not 'retform'" in line

