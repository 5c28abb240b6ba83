"""Readers of foreign NIAH results: detection, --format-in, each format's rows, scale and label, bad content."""

from __future__ import annotations

import json

import pytest

from foreign_results import (
    write_evalscope_report, write_evalscope_reviews, write_gkamradt_v1, write_gkamradt_v2, write_needlebench_csv,
    write_needlebench_results, write_table,
)
from kanana_longctx.cli.plot_cmd import FORMAT_NAMES as CLI_FORMAT_NAMES
from kanana_longctx.errors import BadInput, ResultsError
from kanana_longctx.plot.meta import figure_meta, load_run
from kanana_longctx.plot.readers import FORMAT_NAMES, detect, get_reader, read_source
from test_plot_support import write_run

LENGTHS = [1000, 2000, 4000]
DEPTHS = [0.0, 50.0, 100.0]


def cell(run, length, depth):
    grid = run.grid
    return grid.mean[grid.depths.index(depth), grid.lengths.index(length)]


def test_the_cli_lists_the_registry_formats():
    assert CLI_FORMAT_NAMES == FORMAT_NAMES


def test_gkamradt_v1_directory_keeps_the_judge_scale_and_label(tmp_path):
    src = write_gkamradt_v1(tmp_path / "results", LENGTHS, DEPTHS, score=lambda L, D: 10 if L < 4000 else 3)
    assert detect(src).name == "gkamradt"
    run = load_run(src)
    assert run.format == "gkamradt" and run.model == "kanana-flag-1.5-32.5b-base"
    assert len(run.records) == 9 and not run.warnings
    assert cell(run, 1000, 0.0) == 1.0 and cell(run, 4000, 50.0) == pytest.approx(0.3)
    assert not run.grid.binary  # a judge's 10 is not a Bernoulli success
    meta = figure_meta(run)
    assert meta.score_label == "ChatGPT Score" and (meta.scale.vmin, meta.scale.vmax) == (0.0, 10.0)
    assert meta.scale.format(meta.scale.native(run.grid.overall_mean())) == "7.67"
    assert meta.stem == "kanana-flag-1.5-32.5b-base-niah-4k"  # no form: gkamradt does not say


def test_gkamradt_v1_versions_are_repeats_and_ungraded_results_are_skipped(tmp_path):
    src = write_gkamradt_v1(tmp_path / "results", [1000], [0.0, 100.0], versions=2)
    broken = json.loads(next(src.glob("*depth_0_results.json")).read_text())
    (src / "ungraded.json").write_text(json.dumps({**broken, "score": None}))
    run = load_run(src)
    assert sorted(r.repeat for r in run.records) == [0, 0, 1, 1]
    assert run.grid.counts.tolist() == [[2], [2]]
    assert any("skipped 1 results without a score" in w for w in run.warnings)


def test_gkamradt_original_results_list_with_token_limit(tmp_path):
    path = tmp_path / "OpenAI_Results.json"
    path.write_text(json.dumps([{"token_limit": 1000, "depth_percent": 0, "score": 10},
                                {"token_limit": 2000, "depth_percent": 50, "score": 1}]))
    assert detect(path).name == "gkamradt"
    run = load_run(path, model="GPT-4")
    assert run.grid.lengths == (1000, 2000) and cell(run, 2000, 50.0) == pytest.approx(0.1)


def test_gkamradt_v1_without_model_warns_and_uses_the_directory(tmp_path):
    src = write_gkamradt_v1(tmp_path / "my-results", [1000], [0.0], with_model=False)
    run = load_run(src)
    assert any("names no model" in w and "--model-name" in w for w in run.warnings)
    assert figure_meta(run).model_name == "my-results"
    assert not load_run(src, model="Kanana").warnings  # --model-name answers it


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "invalid JSON at line 1, column 2: expecting property name"), (json.dumps({"context_length": 1000, "depth_percent": 0, "score": 11}),
                                        "outside the 0-10 scale"),
     (json.dumps({"context_length": "long", "depth_percent": 0, "score": 5}), "context_length is \"long\"")],
)
def test_gkamradt_v1_bad_files_name_the_file(tmp_path, content, message):
    src = write_gkamradt_v1(tmp_path / "results", [1000], [0.0])
    bad = src / "zz_bad_results.json"
    bad.write_text(content)
    with pytest.raises(ResultsError, match=message) as info:
        load_run(src, format_in="gkamradt")
    assert str(bad) in str(info.value)


def test_gkamradt_v2_jsonl_skips_errors_and_keeps_fractional_scores(tmp_path):
    path = write_gkamradt_v2(tmp_path / "results" / "multi.jsonl", LENGTHS, DEPTHS, task_type="multi",
                             score=lambda L, D: 0.6 if L == 4000 else 1.0, seeds=(1, 2), errors=2)
    assert detect(path).name == "gkamradt-v2"
    assert detect(path.parent).name == "gkamradt-v2"
    run = load_run(path)
    assert run.model == "openai-gpt-4o-mini" and len(run.records) == 18
    assert {r.task for r in run.records} == {"multi"} and sorted({r.repeat for r in run.records}) == [0, 1]
    assert any("skipped 2 rows with status error" in w for w in run.warnings)
    assert cell(run, 4000, 0.0) == pytest.approx(0.6) and not run.grid.binary
    assert figure_meta(run).score_label == "Score (share of facts found)"


def test_gkamradt_v2_several_models_need_a_choice(tmp_path):
    path = write_gkamradt_v2(tmp_path / "r.jsonl", [1000], [0.0], model_id="model-a")
    write_gkamradt_v2(path, [1000], [0.0], model_id="model-b", score=lambda L, D: 0.0, append=True)
    with pytest.raises(ResultsError, match=r"2 models \(model-a, model-b\): choose one with --model-name"):
        load_run(path)
    assert cell(load_run(path, model="model-b"), 1000, 0.0) == 0.0


def test_evalscope_reviews_are_per_probe_and_split_by_language(tmp_path):
    outputs = write_evalscope_reviews(tmp_path / "outputs" / "20260101_000000", LENGTHS, DEPTHS, repeats=2,
                                      score=lambda L, D: 0.0 if L == 4000 else 1.0)
    write_evalscope_reviews(outputs, LENGTHS, DEPTHS, subset="chinese", metadata=False)
    assert detect(outputs).name == "evalscope" and detect(outputs.parent).name == "evalscope"
    with pytest.raises(ResultsError, match=r"several langs \(en, zh\): plot one with --lang"):
        load_run(outputs)
    en = load_run(outputs, lang="en")
    assert en.model == "qwen-plus" and en.grid.counts.min() == 2 and en.grid.binary  # exact match: 0/1 trials
    assert cell(en, 4000, 100.0) == 0.0 and figure_meta(en).score_label == "Score"
    assert (figure_meta(en).scale.vmin, figure_meta(en).scale.vmax) == (0.0, 1.0)
    zh = load_run(outputs, lang="zh")  # no sample_metadata: the cell comes from the 'Context#L Depth#D' key
    assert zh.grid.lengths == tuple(LENGTHS) and zh.grid.depths == tuple(DEPTHS)


def test_evalscope_judged_reviews_are_not_trials(tmp_path):
    outputs = write_evalscope_reviews(tmp_path / "out", [1000], [0.0, 100.0], judge=True, score=lambda L, D: 1.0)
    run = load_run(outputs)
    assert run.scale.judge and not run.grid.binary


@pytest.mark.parametrize("schema", [1, 2])
def test_evalscope_report_both_schemas(tmp_path, schema):
    path = write_evalscope_report(tmp_path / "out", LENGTHS, DEPTHS, schema=schema, num=5,
                                  score=lambda L, D: 0.2 if D == 50.0 else 0.8)
    assert detect(path).name == "evalscope" and detect(tmp_path / "out").name == "evalscope"
    run = load_run(path)
    assert not run.trials and not run.grid.binary  # per-cell means of 5 samples
    assert cell(run, 2000, 50.0) == pytest.approx(0.2) and cell(run, 2000, 0.0) == pytest.approx(0.8)
    assert any("per-cell means" in w for w in run.warnings)


def test_needlebench_results_with_details_are_binary_repeats(tmp_path):
    results = write_needlebench_results(tmp_path / "results", LENGTHS, DEPTHS, samples=10, parallel=True,
                                        score=lambda L, D: 100.0 if L < 4000 else 30.0)
    write_needlebench_results(results, LENGTHS, DEPTHS, model="qwen-7b")
    assert detect(results).name == "needlebench"
    with pytest.raises(ResultsError, match="choose one with --model-name"):
        load_run(results)
    run = load_run(results, model="internlm2-chat-7b")
    assert run.trials and run.grid.binary and run.grid.counts.min() == 10
    assert cell(run, 4000, 0.0) == pytest.approx(0.3)
    assert run.scale.hi == 100.0 and run.scale.format(run.scale.native(0.3)) == "30.0"
    assert any("skipped 3 parallel" in w for w in run.warnings)
    means = load_run(results / "qwen-7b")  # no details: one mean per dataset
    assert not means.trials and not means.grid.binary and means.model == "qwen-7b"


def test_needlebench_multi_needle_is_its_own_task(tmp_path):
    results = write_needlebench_results(tmp_path / "results", [1000], [0.0])
    write_needlebench_results(results, [1000], [0.0], kind="2needle", score=lambda L, D: 50.0)
    with pytest.raises(ResultsError, match=r"several tasks \(2needle, single\)"):
        load_run(results)
    assert cell(load_run(results, task="2needle"), 1000, 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("layout", ["short", "long"])
def test_needlebench_summary_csv(tmp_path, layout):
    path = write_needlebench_csv(tmp_path / "summary" / "summary_20260101.csv", LENGTHS, DEPTHS,
                                 {"model-x": lambda L, D: 90.0, "model-y": lambda L, D: 10.0}, layout=layout,
                                 missing=("model-x", 4000, 100.0))
    assert detect(path).name == "needlebench"
    run = load_run(path, model="model-x")
    assert run.grid.n_missing == 1 and cell(run, 1000, 0.0) == pytest.approx(0.9)


def test_plain_tables_keep_their_scale(tmp_path):
    rows = [{"length": L, "depth": D, "score": 8 if L == 1000 else 2, "model": "m"} for L in LENGTHS for D in DEPTHS]
    csv_path = write_table(tmp_path / "scores.csv", rows)
    assert detect(csv_path).name == "table"
    run = load_run(csv_path)
    assert run.scale.hi == 10.0 and cell(run, 1000, 50.0) == pytest.approx(0.8) and run.model == "m"
    jsonl = write_table(tmp_path / "scores.jsonl", [{"length": 1000, "depth": 0, "score": 1.0, "form": "retform"},
                                                    {"length": 1000, "depth": 0, "score": 0.0, "form": "retform"}])
    assert detect(jsonl).name == "table"
    run = load_run(jsonl)
    assert run.scale.hi == 1.0 and run.grid.binary and run.form == "retform"
    assert sorted(r.repeat for r in run.records) == [0, 1]  # numbered in order within the cell


@pytest.mark.parametrize(
    "rows, message",
    [([{"length": 1000, "depth": 0, "score": "high"}], "score is 'high'"),
     ([{"length": 1000, "depth": 0, "score": 250}], "above 100"),
     ([{"length": 1000, "depth": 0, "score": -1}], "negative")],
)
def test_bad_tables_are_one_error(tmp_path, rows, message):
    with pytest.raises(ResultsError, match=message):
        load_run(write_table(tmp_path / "t.csv", rows))


def test_format_in_overrides_detection_and_unknown_names_are_listed(tmp_path):
    src = write_gkamradt_v1(tmp_path / "results", [1000], [0.0])
    with pytest.raises(BadInput, match="not one of kanana, gkamradt-v2"):
        get_reader("lmeval")
    with pytest.raises(ResultsError, match="no reviews"):
        read_source(src, "evalscope")  # a gkamradt directory read as EvalScope: its own clear complaint
    run_dir = write_run(tmp_path / "run", [1000], [0.0])
    table = read_source(run_dir / "results.jsonl", "table")[0]
    assert table.format == "table" and table.scale.label == "Score"


def test_unknown_sources_name_the_known_formats(tmp_path):
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(ResultsError, match="not a results file of another known format .*--format-in"):
        detect(odd)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no results.jsonl"):
        detect(tmp_path / "empty")


def test_readers_and_statistics_are_pure():
    import subprocess
    import sys

    code = ("import sys, kanana_longctx.plot.readers, kanana_longctx.plot.compare, kanana_longctx.stats; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'seaborn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
