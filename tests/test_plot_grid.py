"""Pure plot logic: aggregation, labels, size tags, names, summaries (no figure is drawn here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kanana_longctx.errors import ResultsError
from kanana_longctx.plot.grid import aggregate, align, depth_labels, length_labels, size_tag
from kanana_longctx.plot.meta import display_model_name, figure_meta, load_run
from kanana_longctx.plot.summary import summarize
from kanana_longctx.results import ResultRecord
from test_plot_support import README_128K, README_DEPTHS, write_run


def rec(length: int, depth: float, score: float) -> ResultRecord:
    return ResultRecord(probe_id=f"L{length}-D{depth:g}", length=length, depth=depth, score=score, expected="",
                        output="", n_tokens=length, needle_token_start=0)


def test_aggregate_averages_repeats_and_leaves_missing_cells_nan():
    records = [rec(1000, 0.0, 1.0), rec(1000, 0.0, 0.0), rec(1000, 0.0, 1.0), rec(2000, 50.0, 0.0)]
    grid = aggregate(records)
    assert grid.lengths == (1000, 2000) and grid.depths == (0.0, 50.0)
    assert grid.mean[0, 0] == pytest.approx(2 / 3)
    assert grid.counts.tolist() == [[3, 0], [0, 1]]
    assert math.isnan(grid.mean[0, 1]) and math.isnan(grid.mean[1, 0])  # missing, not 0
    assert grid.mean[1, 1] == 0.0  # a real failure stays 0
    assert grid.n_missing == 2 and grid.n_probes == 4
    # the overall mean weighs cells, not probes: (2/3 + 0) / 2
    assert grid.overall_mean() == pytest.approx(1 / 3)


def test_planned_axes_keep_columns_a_killed_run_never_reached():
    grid = aggregate([rec(1000, 0.0, 1.0)], planned_lengths=[1000, 2000, 4000], planned_depths=[0.0, 100.0])
    assert grid.lengths == (1000, 2000, 4000) and grid.depths == (0.0, 100.0)
    assert grid.n_missing == 5
    assert grid.max_length == 4000


def test_depths_from_different_float_paths_share_a_row():
    grid = aggregate([rec(1000, 7.142857142857143, 1.0)], planned_depths=[7.1428571428571])
    assert len(grid.depths) == 1 and grid.n_missing == 0


@pytest.mark.parametrize("bad", [rec(0, 0.0, 1.0), rec(1000, 150.0, 1.0), rec(1000, -1.0, 1.0)])
def test_aggregate_rejects_impossible_rows(bad):
    with pytest.raises(ResultsError):
        aggregate([rec(1000, 0.0, 1.0), bad])


def test_labels_match_the_readme_figures():
    assert depth_labels(README_DEPTHS) == [
        "0.0", "7.0", "14.0", "21.0", "29.0", "36.0", "43.0", "50.0", "57.0", "64.0", "71.0", "79.0", "86.0",
        "93.0", "100.0",
    ]
    labels = length_labels(README_128K)
    assert labels[:3] == ["1000", "10000", "19000"] and labels[-2:] == ["118000", "128000"]
    assert length_labels([100, 200, 300]) == ["100", "200", "300"]  # a smoke grid is not rounded to zero
    assert length_labels([500, 1000, 4000]) == ["500", "1000", "4000"]  # the `quick` preset
    assert length_labels([1000, 1200, 1400]) == ["1000", "1200", "1400"]  # nor merged


@pytest.mark.parametrize(
    "longest, tag",
    [(32000, "32k"), (32768, "32k"), (128000, "128k"), (131072, "128k"), (8192, "8k"), (4000, "4k"),
     (64000, "64k"), (500, "0.5k"), (200000, "200k")],
)
def test_size_tag(longest, tag):
    assert size_tag(longest) == tag


def test_align_puts_two_grids_on_one_axis():
    a = aggregate([rec(1000, 0.0, 1.0)])
    b = aggregate([rec(2000, 0.0, 0.0)])
    a2, b2 = align(a, b)
    assert a2.lengths == b2.lengths == (1000, 2000)
    assert a2.mean[0, 0] == 1.0 and math.isnan(a2.mean[0, 1])
    assert b2.mean[0, 1] == 0.0 and math.isnan(b2.mean[0, 0])


@pytest.mark.parametrize(
    "model, name",
    [
        ("models/kanana-1.5-8b-base/", "kanana-1.5-8b-base"),
        ("kakaocorp/kanana-1.5-8b-instruct-2505", "kanana-1.5-8b-instruct-2505"),
        ("/ckpt/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
        ("kanana-q.Q4_K_M.gguf", "kanana-q"),
        ("smollm2", "SmolLM2-135M-Instruct"),
        ("models/kanana/config.json", "kanana"),
    ],
)
def test_display_model_name(model, name):
    assert display_model_name(model) == name


def test_figure_meta_follows_the_readme_wording(tmp_path):
    run = load_run(write_run(tmp_path / "r", README_128K, README_DEPTHS, model="kakaocorp/Kanana-1.5-8B-Base",
                             form="retform", yarn={"factor": 4.0, "original_max_position_embeddings": 32768},
                             extra={"scorer": "substring"}))
    meta = figure_meta(run)
    assert meta.title == 'Pressure Testing Kanana-1.5-8B-Base 128K via "Needle In A HayStack"'
    assert meta.subtitle == "Asking Kanana-1.5-8B-Base To Do Fact Retrieval Across Context Lengths & Document Depth"
    assert meta.stem == "kanana-1.5-8b-base-niah-retform-128k"
    assert meta.native_context == 32768
    assert meta.score_label == "Score (substring, ×10)"
    other = figure_meta(run, model_name="카나나 8B", title="Mine")
    assert other.stem == "카나나-8b-niah-retform-128k" and other.title == "Mine"


def test_without_run_json_the_directory_names_the_model(tmp_path):
    run = load_run(write_run(tmp_path / "my-run", [1000], [0.0], run_json=False))
    assert any("no run.json" in w for w in run.warnings)
    meta = figure_meta(run)
    assert meta.model_name == "my-run" and meta.form == "qaform"  # form from the rows
    assert meta.scorer == "exact match" and meta.native_context is None


def test_summary_counts_repeats_bands_and_missing(tmp_path):
    run = load_run(write_run(tmp_path / "r", [1000, 2000], [0.0, 50.0, 100.0],
                             score=lambda length, depth: 0.0 if depth == 100.0 else 1.0, repeats=2,
                             skip=lambda length, depth: length == 2000 and depth == 50.0))
    s = summarize(run.grid)
    assert (s.n_cells, s.n_filled, s.n_missing, s.n_probes) == (6, 5, 1, 10)
    assert s.repeats_text == "2"
    assert s.overall == pytest.approx(3 / 5)
    assert [r.label for r in s.per_length] == ["1000", "2000"]
    assert s.per_length[1].mean == pytest.approx(0.5)
    assert (s.per_length[1].cells, s.per_length[1].planned, s.per_length[1].probes) == (2, 3, 4)
    bands = {r.label: r for r in s.per_band}
    assert set(bands) == {"0-20%", "40-60%", "80-100%"}
    assert bands["80-100%"].mean == 0.0 and bands["40-60%"].cells == 1 and bands["40-60%"].planned == 2
    assert s.to_dict()["per_length"][0]["mean"] == pytest.approx(2 / 3)


def test_summary_of_an_empty_column_is_nan_not_zero():
    grid = aggregate([rec(1000, 0.0, 1.0)], planned_lengths=[1000, 2000])
    s = summarize(grid)
    assert math.isnan(s.per_length[1].mean)
    assert np.isnan(grid.length_means()[1])
