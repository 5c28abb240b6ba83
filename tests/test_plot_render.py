"""Rendered figures: README pixel size, colours of correct / wrong / missing cells, extras, comparison, Hangul."""

from __future__ import annotations

import warnings

import pytest
from PIL import Image

from kanana_longctx.plot import fonts
from kanana_longctx.plot.heatmap import CompareText, Extras, build_readme_figure, render_compare_figure, render_readme_figure
from kanana_longctx.plot.meta import figure_meta, load_run
from test_plot_support import GREEN, README_32K, README_DEPTHS, RED, cell_colour, near, write_run

SMALL_LENGTHS = [1000, 2000, 3000, 4000]
SMALL_DEPTHS = [0.0, 50.0, 100.0]


def _render(tmp_path, name="r", dpi=100, extras=Extras(), **kwargs):
    run = load_run(write_run(tmp_path / name, kwargs.pop("lengths", SMALL_LENGTHS),
                             kwargs.pop("depths", SMALL_DEPTHS), **kwargs))
    meta = figure_meta(run)
    rendered = render_readme_figure(run.grid, meta, tmp_path / "out" / name / meta.stem, extras=extras, dpi=dpi)
    return run, meta, rendered


def test_readme_size_is_1750_by_800_and_scales_with_dpi(tmp_path):
    _, meta, rendered = _render(tmp_path, lengths=README_32K, depths=README_DEPTHS)
    assert rendered.paths == (tmp_path / "out" / "r" / "kanana-test-8b-niah-qaform-32k.png",)
    assert Image.open(rendered.paths[0]).size == (1750, 800)
    _, _, small = _render(tmp_path, name="r2", dpi=50)
    assert Image.open(small.paths[0]).size == (875, 400)


def test_all_correct_is_green_and_all_wrong_is_red(tmp_path):
    _, _, good = _render(tmp_path, name="good")
    _, _, bad = _render(tmp_path, name="bad", score=lambda length, depth: 0.0)
    for row in range(len(SMALL_DEPTHS)):
        for col in range(len(SMALL_LENGTHS)):
            assert near(cell_colour(good.paths[0], good.panels[0], 3, 4, row, col), GREEN)
            assert near(cell_colour(bad.paths[0], bad.panels[0], 3, 4, row, col), RED)


def test_missing_cells_are_grey_not_failures(tmp_path):
    # Everything that ran failed, and the last length never ran: those cells must not look like failures too.
    _, _, rendered = _render(tmp_path, score=lambda length, depth: 0.0, skip=lambda length, depth: length == 4000)
    png, box = rendered.paths[0], rendered.panels[0]
    assert near(cell_colour(png, box, 3, 4, 0, 0), RED)
    for row in range(3):
        r, g, b = cell_colour(png, box, 3, 4, row, 3)
        assert max(r, g, b) - min(r, g, b) < 12, "a missing cell is grey"
        assert not near((r, g, b), RED, tol=60) and not near((r, g, b), GREEN, tol=60)


def test_repeated_probes_average_to_the_middle_of_the_scale(tmp_path):
    # Half right, half wrong in every cell -> 5 on the 0-10 bar, i.e. the colormap's yellow middle.
    # (Two repeats with their own probe ids: a second row of one probe id would be dropped as a duplicate.)
    run_dir = write_run(tmp_path / "r", SMALL_LENGTHS, SMALL_DEPTHS, repeats=2,
                        per_repeat=lambda length, depth, r: 1.0 if r == 0 else 0.0)
    run = load_run(run_dir)
    rendered = render_readme_figure(run.grid, figure_meta(run), tmp_path / "out" / "x")
    assert near(cell_colour(rendered.paths[0], rendered.panels[0], 3, 4, 1, 1), (0xEB, 0xB8, 0x39), tol=15)


def test_titles_axes_and_colour_bar_follow_the_readme(tmp_path):
    run = load_run(write_run(tmp_path / "r", SMALL_LENGTHS, SMALL_DEPTHS, extra={"scorer": "substring"}))
    meta = figure_meta(run)
    fig, _ = build_readme_figure(run.grid, meta)
    heat, cbar = fig.axes[0], fig.axes[1]
    assert fig.get_suptitle() == 'Pressure Testing Kanana-Test-8B 4K via "Needle In A HayStack"'
    assert heat.get_title() == "Asking Kanana-Test-8B To Do Fact Retrieval Across Context Lengths & Document Depth"
    assert heat.get_xlabel() == "Context Length (# Tokens)" and heat.get_ylabel() == "Document Depth (%)"
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0.0", "50.0", "100.0"]  # 0 at the top
    assert heat.get_yticklabels()[0].get_position()[1] < heat.get_yticklabels()[-1].get_position()[1]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["1000", "2000", "3000", "4000"]
    assert heat.get_xticklabels()[0].get_rotation() == 45
    assert cbar.get_ylabel() == "Score (substring, ×10)"
    assert cbar.get_ylim() == (0.0, 10.0)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_native_context_line_only_when_the_run_used_yarn(tmp_path):
    yarn = {"factor": 4.0, "original_max_position_embeddings": 2048}
    with_yarn = load_run(write_run(tmp_path / "y", SMALL_LENGTHS, SMALL_DEPTHS, yarn=yarn))
    fig, _ = build_readme_figure(with_yarn.grid, figure_meta(with_yarn))
    assert "native context 2,048" in _texts(fig)
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    # between the 2000 column (inside 2,048) and the 3000 column (outside)
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(2.0)
    fig, _ = build_readme_figure(with_yarn.grid, figure_meta(with_yarn), Extras(native_line=False))
    assert not any(t.startswith("native context") for t in _texts(fig))
    plain = load_run(write_run(tmp_path / "n", SMALL_LENGTHS, SMALL_DEPTHS))
    fig, _ = build_readme_figure(plain.grid, figure_meta(plain))
    assert not any(t.startswith("native context") for t in _texts(fig))


def test_annotate_and_mean_line(tmp_path):
    run = load_run(write_run(tmp_path / "r", SMALL_LENGTHS, SMALL_DEPTHS,
                             score=lambda length, depth: 1.0 if length < 3000 else 0.0,
                             skip=lambda length, depth: length == 4000 and depth == 0.0))
    fig, _ = build_readme_figure(run.grid, figure_meta(run), Extras(annotate=True, mean_line=True))
    texts = _texts(fig)
    assert texts.count("10") == 6 and texts.count("0") == 5  # 11 finished cells; the missing one has no number
    mean = [line for line in fig.axes[0].lines if line.get_label() == "mean per length"]
    assert len(mean) == 1
    # row coordinates: 0 (top) is score 10, 3 (bottom) is score 0
    assert list(mean[0].get_ydata()) == pytest.approx([0.0, 0.0, 3.0, 3.0])


def test_compare_draws_a_b_and_the_difference(tmp_path):
    a = load_run(write_run(tmp_path / "a", SMALL_LENGTHS, SMALL_DEPTHS,
                           score=lambda length, depth: 1.0 if length <= 2000 else 0.0))
    b = load_run(write_run(tmp_path / "b", SMALL_LENGTHS, SMALL_DEPTHS,
                           yarn={"factor": 2.0, "original_max_position_embeddings": 2048},
                           skip=lambda length, depth: length == 4000))
    text = CompareText(title="t", label_a="no YaRN", label_b="YaRN ×2", score_label="Score (exact match, ×10)",
                       native_context=2048)
    rendered = render_compare_figure(a.grid, b.grid, text, tmp_path / "out" / "cmp")
    png = rendered.paths[0]
    assert png.name == "cmp.png" and len(rendered.panels) == 3
    box_a, box_b, box_d = rendered.panels
    assert box_a[2] <= box_b[0] <= box_d[0]  # side by side, A left of B left of the difference
    assert near(cell_colour(png, box_a, 3, 4, 1, 3), RED) and near(cell_colour(png, box_b, 3, 4, 1, 2), GREEN)
    assert near(cell_colour(png, box_d, 3, 4, 1, 2), GREEN)  # B better at 3000
    r, g, b_ = cell_colour(png, box_d, 3, 4, 1, 0)
    assert min(r, g, b_) > 235  # equal at 1000: the diverging scale's white
    r, g, b_ = cell_colour(png, box_d, 3, 4, 1, 3)  # B has no 4000: no difference either
    assert max(r, g, b_) - min(r, g, b_) < 12 and max(r, g, b_) < 235


def test_hangul_renders_with_a_hangul_font(tmp_path):
    if fonts.hangul_family() is None:
        pytest.skip("no Hangul font on this machine (pip install koreanize-matplotlib)")
    run = load_run(write_run(tmp_path / "r", SMALL_LENGTHS, SMALL_DEPTHS))
    meta = figure_meta(run, model_name="카나나-8B")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for every lost glyph
        rendered = render_readme_figure(run.grid, meta, tmp_path / "out" / meta.stem)
    assert not rendered.missing_hangul
    assert rendered.paths[0].name == "카나나-8b-niah-qaform-4k.png"


def test_without_a_hangul_font_it_still_renders_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts, "hangul_family", lambda: None)
    run = load_run(write_run(tmp_path / "r", SMALL_LENGTHS, SMALL_DEPTHS))
    rendered = render_readme_figure(run.grid, figure_meta(run, model_name="카나나"), tmp_path / "out" / "k")
    assert rendered.missing_hangul and rendered.paths[0].stat().st_size > 0
    latin = render_readme_figure(run.grid, figure_meta(run), tmp_path / "out" / "l")
    assert not latin.missing_hangul  # no Hangul in the text, nothing to warn about
