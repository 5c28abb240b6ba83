"""`kanana-longctx plot` on sources other than a complete run: foreign tools' results (the README figure from a
gkamradt directory in one command), partial, missing and malformed run.json, and sources that need a choice."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from foreign_results import write_evalscope_reviews, write_gkamradt_v1, write_needlebench_results, write_table
from kanana_longctx.plot.heatmap import build_readme_figure
from kanana_longctx.plot.meta import figure_meta, load_run
from test_plot_support import (
    GREEN, README_32K, README_DEPTHS, RED, SMALL_DEPTHS, SMALL_LENGTHS, cell_colour, near, one_error_line, plot,
    write_run,
)


def test_gkamradt_results_render_the_readme_figure_in_one_command(tmp_path):
    # The Kanana README's 32K grid (32 x 15) as LLMTest_NeedleInAHaystack writes it: a judge's 1-10 per file.
    src = write_gkamradt_v1(tmp_path / "results", README_32K, README_DEPTHS,
                            score=lambda L, D: 10 if L <= 24000 else 1)
    out = tmp_path / "plots"
    result = plot(str(src), "--out", str(out), "--format", "png,svg", "--model-name", "Kanana-Flag-1.5-32.5B-Base")
    assert result.exit_code == 0, result.output
    assert f"read {src} as gkamradt" in result.output
    png = out / "kanana-flag-1.5-32.5b-base-niah-32k.png"
    assert Image.open(png).size == (1750, 800)
    svg = (out / "kanana-flag-1.5-32.5b-base-niah-32k.svg").read_text(encoding="utf-8")
    assert "ChatGPT Score" in svg and 'Pressure Testing Kanana-Flag-1.5-32.5B-Base 32K via' in svg
    assert "mean score 7.75 (scale 0-10) over 480/480 cells (480 probes, 1 per cell)" in result.output
    run = load_run(src)
    fig, boxes = build_readme_figure(run.grid, figure_meta(run, model_name="Kanana-Flag-1.5-32.5B-Base"))
    assert fig.axes[1].get_ylabel() == "ChatGPT Score" and fig.axes[1].get_ylim() == (0.0, 10.0)
    assert near(cell_colour(png, boxes[0], 15, 32, 7, 0), GREEN) and near(cell_colour(png, boxes[0], 15, 32, 7, 31), RED,
                                                                          tol=25)


def test_score_label_replaces_the_sources_label(tmp_path):
    src = write_gkamradt_v1(tmp_path / "results", [1000, 2000], [0.0, 100.0])
    out = tmp_path / "o"
    result = plot(str(src), "-o", str(out), "-f", "svg", "--score-label", "GPT-4 judge score")
    assert result.exit_code == 0, result.output
    assert "GPT-4 judge score" in next(out.glob("*.svg")).read_text(encoding="utf-8")


def test_format_in_is_said_and_checked(tmp_path):
    run_dir = write_run(tmp_path / "run", [1000, 2000], [0.0])
    result = plot(str(run_dir / "results.jsonl"), "--format-in", "table", "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert f"read {run_dir / 'results.jsonl'} as table" in result.output
    bad = plot(str(run_dir), "--format-in", "lmeval", "-o", str(tmp_path / "o2"))
    assert bad.exit_code == 2 and "--format-in lmeval: not one of kanana" in one_error_line(bad)


@pytest.mark.parametrize(
    "run_json",
    [{"model": "models/Kanana-Partial-8B", "form": "retform"}, {"model": "models/Kanana-Partial-8B"}, {},
     {"model": "models/Kanana-Partial-8B", "form": "retform", "yarn": None, "extra": {"scorer": "substring"}}],
)
def test_partial_run_json_renders(tmp_path, run_json):
    run_dir = write_run(tmp_path / "partial", SMALL_LENGTHS, SMALL_DEPTHS, form="retform", run_json=False)
    (run_dir / "run.json").write_text(json.dumps(run_json))
    out = tmp_path / "o"
    result = plot(str(run_dir), "-o", str(out))
    assert result.exit_code == 0, result.output
    name = "kanana-partial-8b" if "model" in run_json else "partial"
    assert (out / f"{name}-niah-retform-4k.png").is_file()
    assert "mean score 1.000 over 12/12 cells" in result.output


def test_missing_run_json_costs_a_warning(tmp_path):
    run_dir = write_run(tmp_path / "bare", SMALL_LENGTHS, SMALL_DEPTHS, run_json=False)
    result = plot(str(run_dir), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "no run.json" in result.output and (tmp_path / "o" / "bare-niah-qaform-4k.png").is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"model": "x", "form": ', "run.json: invalid JSON at line 1, column 24: expecting value"),
        ("[1, 2]", "run.json holds a list, not an object"),
        ('{"model": 7}', "'model' is a whole number (7), expected a string"),
        ('{"model": "x", "yarn": "yes"}', "'yarn' is a string (\"yes\"), expected an object or null"),
        ('{"grid": [1000]}', "'grid' is a list"),
    ],
)
def test_malformed_run_json_is_one_line(tmp_path, content, message):
    run_dir = write_run(tmp_path / "run", SMALL_LENGTHS, SMALL_DEPTHS, run_json=False)
    (run_dir / "run.json").write_text(content)
    result = plot(str(run_dir), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_sources_that_mix_models_tasks_or_languages_ask_for_a_choice(tmp_path):
    results = write_needlebench_results(tmp_path / "results", [1000, 2000], [0.0, 100.0], samples=4)
    write_needlebench_results(results, [1000, 2000], [0.0, 100.0], model="other-7b")
    mixed = plot(str(results), "-o", str(tmp_path / "o"))
    assert mixed.exit_code == 2 and "choose one with --model-name" in one_error_line(mixed)
    chosen = plot(str(results), "-o", str(tmp_path / "o"), "--model-name", "other-7b")
    assert chosen.exit_code == 0, chosen.output
    assert (tmp_path / "o" / "other-7b-niah-2k.png").is_file()
    outputs = write_evalscope_reviews(tmp_path / "es", [1000], [0.0])
    write_evalscope_reviews(outputs, [1000], [0.0], subset="chinese")
    langs = plot(str(outputs), "-o", str(tmp_path / "o2"))
    assert langs.exit_code == 2 and "--lang" in one_error_line(langs)
    assert plot(str(outputs), "-o", str(tmp_path / "o2"), "--lang", "zh").exit_code == 0


def test_a_table_with_outcomes_prints_the_failure_classes(tmp_path):
    rows = [{"length": 1000, "depth": d, "score": s, "outcome": o, "model": "m"}
            for d, s, o in [(0, 1, "found"), (0, 0, "distractor"), (50, 0, "refusal"), (50, 1, "")]]
    result = plot(str(write_table(tmp_path / "t.csv", rows)), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "failure classes" in text
    found = next(line for line in text.splitlines() if line.startswith("found"))
    assert "2" in found and "50.0%" in found  # the unclassified 1 counts as found


def test_unreadable_foreign_content_is_one_line(tmp_path):
    src = write_gkamradt_v1(tmp_path / "results", [1000], [0.0])
    (src / "zz_results.json").write_text(json.dumps({"context_length": 1000, "depth_percent": 0, "score": 40}))
    result = plot(str(src), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "outside the 0-10 scale" in one_error_line(result)
