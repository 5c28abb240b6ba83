"""`kanana-longctx plot` through the real CLI: file names, formats, summary, --compare, and bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from test_plot_support import (
    README_128K, README_DEPTHS, SMALL_DEPTHS, SMALL_LENGTHS, one_error_line, plot, write_run,
)


def test_readme_figure_name_size_and_summary(tmp_path):
    run = write_run(tmp_path / "run", README_128K, README_DEPTHS, model="kakaocorp/Kanana-1.5-8B-Base",
                    form="retform", repeats=2, score=lambda length, depth: 1.0 if length <= 32768 else 0.0)
    out = tmp_path / "plots"
    result = plot(str(run), "--out", str(out))
    assert result.exit_code == 0, result.output
    png = out / "kanana-1.5-8b-base-niah-retform-128k.png"
    assert [p.name for p in out.iterdir()] == [png.name]
    assert Image.open(png).size == (1750, 800)
    assert f"wrote {png}" in result.output
    # 4 of 15 lengths are within 32K; every cell was probed twice
    assert "mean score 0.267 over 225/225 cells (450 probes, 2 per cell)" in result.output
    assert "per length" in result.output and "per depth band" in result.output and "80-100%" in result.output


def test_results_file_formats_dpi_and_overrides(tmp_path):
    run = write_run(tmp_path / "run", SMALL_LENGTHS, SMALL_DEPTHS)
    out = tmp_path / "o"
    result = plot(str(run / "results.jsonl"), "-o", str(out), "--format", "png,svg,pdf", "--dpi", "50",
                  "--model-name", "My Model", "--title", "Custom", "--annotate", "--mean-line")
    assert result.exit_code == 0, result.output
    stem = "my-model-niah-qaform-4k"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.pdf", f"{stem}.png", f"{stem}.svg"]
    assert Image.open(out / f"{stem}.png").size == (875, 400)
    assert "Custom" in (out / f"{stem}.svg").read_text(encoding="utf-8")
    assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_unfinished_run_reports_missing_cells(tmp_path):
    run = write_run(tmp_path / "run", SMALL_LENGTHS, SMALL_DEPTHS, skip=lambda length, depth: length == 4000,
                    tail='{"probe_id": "L4000-D0", "len')  # killed mid-write
    result = plot(str(run), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "torn last line" in result.output
    assert "over 9/12 cells (9 probes, 1 per cell, 3 cells with no result)" in result.output
    assert (tmp_path / "o" / "kanana-test-8b-niah-qaform-4k.png").is_file()  # the planned 4K still names it


def test_compare_writes_one_vs_figure_and_both_means(tmp_path):
    a = write_run(tmp_path / "noyarn", SMALL_LENGTHS, SMALL_DEPTHS, score=lambda length, depth: float(length <= 2000))
    b = write_run(tmp_path / "yarn", SMALL_LENGTHS, SMALL_DEPTHS,
                  yarn={"factor": 2.0, "original_max_position_embeddings": 2048})
    out = tmp_path / "o"
    result = plot(str(a), "--compare", str(b), "-o", str(out))
    assert result.exit_code == 0, result.output
    png = out / "kanana-test-8b-niah-qaform-4k-vs-yarn.png"
    assert [p.name for p in out.iterdir()] == [png.name]
    assert Image.open(png).size == (2800, 850)
    assert "A (no YaRN" in result.output and "mean score 0.500" in result.output
    assert "B (YaRN ×2" in result.output and "mean score 1.000" in result.output
    assert "B − A: +0.500" in result.output


def test_two_runs_that_would_overwrite_each_other_fail_before_writing(tmp_path):
    a = write_run(tmp_path / "a", SMALL_LENGTHS, SMALL_DEPTHS)
    b = write_run(tmp_path / "b", SMALL_LENGTHS, SMALL_DEPTHS)
    result = plot(str(a), str(b), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "would both be written" in result.output
    assert not (tmp_path / "o").exists()


def test_missing_run_is_one_line(tmp_path):
    result = plot(str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "no such run directory or results file" in one_error_line(result)


def test_directory_without_results_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = plot(str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no results.jsonl" in one_error_line(result)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no result rows"),
        ("\n\n", "no result rows"),
        (json.dumps({"length": 1000, "depth": 0}) + "\n", "has no score"),
        (json.dumps({"score": 1.0}) + "\n", "has no length, depth"),
        (json.dumps({"length": 1000, "depth": 0, "score": 7}) + "\n", "outside [0, 1]"),
        ("not json\n" + json.dumps({"length": 1000, "depth": 0, "score": 1}) + "\n", "results.jsonl: invalid JSON at line 1, column 1: expecting value"),
    ],
)
def test_bad_results_are_one_line(tmp_path, content, message):
    path = tmp_path / "results.jsonl"
    path.write_text(content, encoding="utf-8")
    result = plot(str(path), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [(["--format", "gif"], "gif is not one of"), (["--dpi", "0"], "--dpi 0")])
def test_bad_options_are_one_line(tmp_path, args, message):
    run = write_run(tmp_path / "run", SMALL_LENGTHS, SMALL_DEPTHS)
    result = plot(str(run), "-o", str(tmp_path / "o"), *args)
    assert result.exit_code == 2 and message in one_error_line(result)
