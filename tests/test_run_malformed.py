"""Malformed run files are one line each, never an internal error: a run.json that is not an object, nested too
deeply, lacking a field or with one of the wrong type; results lines nested too deeply or with a field of the
wrong type (a probe_id that is a list would otherwise fail deep inside resume)."""

from __future__ import annotations

import json

import pytest

from kanana_longctx.errors import ResultsError
from kanana_longctx.results import load_results, read_run_info
from test_plot_support import one_error_line, plot, write_run

GOOD = {"model": "m", "form": "qaform", "lang": "en", "haystack": "noise:en", "haystack_hash": "h", "grid": {},
        "seed": 0, "yarn": None, "max_new_tokens": 20}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[1, 2]", "it holds an array, not an object"),
        ('"run"', "it holds a string, not an object"),
        ('{"grid": ' + "[" * 20000 + "]" * 20000 + "}", "JSON nested too deeply"),
        (json.dumps({**GOOD, "grid": 5}), "'grid' is 5, of the wrong type"),
        (json.dumps({**GOOD, "seed": True}), "'seed' is true, of the wrong type"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "seed"}), "no seed"),
        ("\xff", "not UTF-8"),
    ],
)
def test_a_malformed_run_json_is_one_line(tmp_path, text, fragment):
    (tmp_path / "run.json").write_text(text, encoding="latin-1" if text == "\xff" else "utf-8")
    with pytest.raises(ResultsError, match="run.json") as caught:
        read_run_info(tmp_path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("[" * 20000 + "]" * 20000, "JSON nested too deeply"),
        ('{"probe_id": ["L1"], "length": 1, "depth": 0, "score": 1}', "non-text probe_id"),
        ('{"length": 1, "depth": 0, "score": 1, "seed": "0"}', 'seed "0", not a whole number'),
        ('{"length": 1, "depth": 0, "score": 1, "keys": [1]}', "keys that is not a list of text"),
        ('{"length": 1, "depth": 0, "score": 1, "extra": []}', "extra that is not an object"),
        ('{"length": 1, "depth": 1e999, "score": 1}', "not a finite number"),
    ],
)
def test_a_malformed_results_line_is_one_line(tmp_path, line, fragment):
    (tmp_path / "results.jsonl").write_text(line + "\n" + '{"length": 1, "depth": 0, "score": 1}\n')
    with pytest.raises(ResultsError, match="results.jsonl") as caught:
        load_results(tmp_path)
    assert fragment in str(caught.value)


def test_null_fields_of_a_row_read_as_absent(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"length": 1, "depth": 0, "score": 1, "seed": null, "task": null}\n')
    [record], _ = load_results(tmp_path)
    assert record.seed == 0 and record.task == "single"


def test_plot_of_a_run_json_nested_too_deeply_is_one_line(tmp_path):
    run = write_run(tmp_path / "run", [1000], [0.0])
    (run / "run.json").write_text('{"grid": ' + "[" * 20000 + "]" * 20000 + "}")
    assert "nested too deeply" in one_error_line(plot(str(run), "--out", str(tmp_path / "plots")))
