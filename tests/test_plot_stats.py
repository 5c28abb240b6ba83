"""Statistics in plot: per-length intervals, failure classes, --annotate with repeats, and --compare's paired
tests (which test, which cells, and the honest answer when cells are too small)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from foreign_results import write_evalscope_report, write_gkamradt_v1, write_gkamradt_v2
from kanana_longctx.plot.compare import compare_runs, pair_records
from kanana_longctx.plot.heatmap import CompareText, Extras, build_compare_figure, build_readme_figure
from kanana_longctx.plot.meta import figure_meta, load_run
from kanana_longctx.plot.summary import outcome_table, summarize
from kanana_longctx.stats import mcnemar_exact, wilson_interval
from test_plot_support import README_32K, README_DEPTHS, SMALL_DEPTHS, SMALL_LENGTHS, plot, write_run

LENGTHS, DEPTHS = SMALL_LENGTHS, SMALL_DEPTHS


def test_per_length_wilson_intervals_come_from_the_probes(tmp_path):
    # 3 repeats per cell; at 4000 only the first repeat of each depth succeeds: 3 of 9 probes.
    run = load_run(write_run(tmp_path / "r", LENGTHS, DEPTHS, repeats=3,
                             per_repeat=lambda L, D, r: 1.0 if L < 4000 or r == 0 else 0.0))
    s = summarize(run.grid, run.records)
    last = s.per_length[-1]
    assert (last.hits, last.probes) == (3, 9) and last.mean == pytest.approx(1 / 3)
    assert last.interval == wilson_interval(3, 9)
    assert s.interval_method == "Wilson" and s.hits == 30 and s.interval == wilson_interval(30, 36)
    assert s.per_length[0].interval == wilson_interval(9, 9)
    assert s.to_dict()["per_length"][-1]["interval"] == [pytest.approx(wilson_interval(3, 9).low, abs=1e-6),
                                                         pytest.approx(wilson_interval(3, 9).high, abs=1e-6)]


def test_fractional_scores_get_a_bootstrap_interval_and_report_means_none(tmp_path):
    v2 = load_run(write_gkamradt_v2(tmp_path / "m.jsonl", LENGTHS, DEPTHS, task_type="multi", seeds=(1, 2, 3),
                                    score=lambda L, D: 0.5 if D == 50.0 else 1.0))
    s = summarize(v2.grid, v2.records)
    assert s.interval_method == "bootstrap" and s.hits is None
    row = s.per_length[0]
    assert row.interval.low < row.mean < row.interval.high
    report = load_run(write_evalscope_report(tmp_path / "es", LENGTHS, DEPTHS, num=5))
    s = summarize(report.grid, report.records, per_probe=report.trials)
    assert s.interval_method == "" and np.isnan(s.per_length[0].interval.low)


def test_outcome_table_counts_classes_and_derives_the_missing_ones(tmp_path):
    run = load_run(write_run(tmp_path / "r", LENGTHS, DEPTHS, repeats=2,
                             per_repeat=lambda L, D, r: float(r == 0),
                             outcome=lambda s: "found" if s else "refusal"))
    table = {o.outcome: (o.probes, o.share) for o in outcome_table(run.records)}
    assert table == {"found": (12, 0.5), "refusal": (12, 0.5)}
    plain = load_run(write_run(tmp_path / "p", LENGTHS, DEPTHS))
    assert outcome_table(plain.records) == ()  # nothing classified: no table


def _cell_texts(fig):
    return [t for t in fig.axes[0].texts if "/" in t.get_text() or t.get_text().replace(".", "").isdigit()]


def test_annotations_with_repeats_fit_their_cells_on_the_32_by_15_grid(tmp_path):
    run = load_run(write_run(tmp_path / "r", README_32K, README_DEPTHS, repeats=3,
                             per_repeat=lambda L, D, r: float((L // 1000 + r) % 3 != 0)))
    fig, boxes = build_readme_figure(run.grid, figure_meta(run), Extras(annotate=True))
    texts = [t for t in fig.axes[0].texts if "\n" in t.get_text()]
    assert len(texts) == 480
    first = next(t.get_text() for t in texts if t.get_position() == (0.5, 0.5))  # L1000 D0: repeats 1 and 2 hit
    k = 2
    assert first == f"6.7\n{k}/3\n±{wilson_interval(k, 3).half_width * 10:.1f}"
    left, top, right, bottom = boxes[0]
    cell_w, cell_h = (right - left) / 32, (bottom - top) / 15
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    for t in texts:
        extent = t.get_window_extent(renderer)
        assert extent.width < cell_w * 0.95 and extent.height < cell_h * 0.95, t.get_text()
    assert min(t.get_fontsize() for t in texts) >= 7


def _ab_runs(tmp_path, repeats: int, b_score=lambda L, D, r: 1.0):
    a = write_run(tmp_path / "a", LENGTHS, DEPTHS, repeats=repeats,
                  per_repeat=lambda L, D, r: 1.0 if L <= 2000 else 0.0)
    b = write_run(tmp_path / "b", LENGTHS, DEPTHS, repeats=repeats, per_repeat=b_score,
                  yarn={"factor": 2.0, "original_max_position_embeddings": 2048})
    return a, b


def test_three_repeats_per_cell_are_too_few_and_the_overall_test_speaks(tmp_path):
    a, b = _ab_runs(tmp_path, repeats=3)
    cmp = compare_runs(load_run(a), load_run(b), np.random.default_rng(0))
    assert cmp.test == "McNemar exact" and cmp.cells_too_small and not cmp.significant_cells
    assert cmp.overall.n_pairs == 36 and (cmp.overall.a_only, cmp.overall.b_only) == (0, 18)
    assert cmp.overall.p_value == pytest.approx(mcnemar_exact(0, 18))
    assert cmp.overall.mean_difference == pytest.approx(0.5)
    out = tmp_path / "o"
    result = plot(str(a), "--compare", str(b), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "paired: 36 probes in both runs" in result.output
    assert "McNemar exact: b = 0 (A right, B wrong), c = 18 (B right, A wrong), p = 7.63e-06" in result.output
    assert "mean difference B − A: +0.500 (95% CI" in result.output
    assert "cells too small for a per-cell test: 3 pairs per cell at most" in result.output
    assert "smallest possible p with 3: 0.25" in result.output


def test_enough_repeats_mark_the_cells_that_differ(tmp_path):
    # 8 repeats: where A fails every probe and B passes every one, exact p = 2 / 2**8 = 0.0078.
    a, b = _ab_runs(tmp_path, repeats=8, b_score=lambda L, D, r: 0.0 if (L, D) == (4000, 100.0) else 1.0)
    run_a, run_b = load_run(a), load_run(b)
    cmp = compare_runs(run_a, run_b, np.random.default_rng(0))
    assert not cmp.cells_too_small and cmp.n_tested == 12
    assert cmp.significant_cells == {(3000, 0.0), (3000, 50.0), (3000, 100.0), (4000, 0.0), (4000, 50.0)}
    assert cmp.cells[(3000, 0.0)].p_value == pytest.approx(2 / 2**8)
    assert cmp.cells[(1000, 0.0)].p_value == 1.0
    assert cmp.survive_fdr == 5
    text = CompareText(title="t", label_a="a", label_b="b", score_label="s", significant=cmp.significant_cells,
                       note="B − A: outlined")
    fig, _ = build_compare_figure(run_a.grid, run_b.grid, text)
    outlines = sorted(p.get_xy() for p in fig.axes[3].patches if isinstance(p, Rectangle) and not p.get_fill())
    # columns 2, 3 = lengths 3000, 4000; rows 0, 1, 2 = depths 0, 50, 100 (0 at the top)
    assert outlines == [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1)]
    result = plot(str(a), "--compare", str(b), "-o", str(tmp_path / "o"))
    assert "per cell: 5 of 12 tested cells differ at p < 0.05 (McNemar exact" in result.output


def test_fractional_scores_are_compared_by_the_sign_flip_test(tmp_path):
    a = write_gkamradt_v2(tmp_path / "a.jsonl", LENGTHS, DEPTHS, task_type="multi", seeds=(1, 2),
                          score=lambda L, D: 0.4)
    b = write_gkamradt_v2(tmp_path / "b.jsonl", LENGTHS, DEPTHS, task_type="multi", seeds=(1, 2),
                          model_id="other", score=lambda L, D: 0.8 if L > 2000 else 0.4)
    result = plot(str(a), "--compare", str(b), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "sign-flip permutation: 0 pairs A higher, 12 pairs B higher, p = 0.000" in result.output
    assert "cells too small for a per-cell test: 2 pairs per cell" in result.output


def test_two_judge_runs_pair_by_length_and_depth(tmp_path):
    a = write_gkamradt_v1(tmp_path / "a", LENGTHS, DEPTHS, score=lambda L, D: 10)
    b = write_gkamradt_v1(tmp_path / "b", LENGTHS, DEPTHS, score=lambda L, D: 10 if L < 4000 else 5, model="m-b")
    cmp = compare_runs(load_run(a), load_run(b), np.random.default_rng(0))
    assert cmp.test == "sign-flip permutation"  # a judge's 10 vs 5 is not a Bernoulli outcome
    assert cmp.overall.n_pairs == 12 and cmp.overall.b_only == 0 and cmp.overall.a_only == 3
    assert cmp.overall.mean_difference == pytest.approx(-0.5 * 3 / 12)


def test_pairing_follows_probe_identity_not_file_order(tmp_path):
    a, b = _ab_runs(tmp_path, repeats=2)
    lines = (b / "results.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    (b / "results.jsonl").write_text("\n".join(lines[:-3]) + "\n")  # shuffled, and 3 probes short
    run_a, run_b = load_run(a), load_run(b)
    pairs, only_a, only_b = pair_records(run_a.records, run_b.records, by_probe_id=True)
    assert (len(pairs), only_a, only_b) == (21, 3, 0)
    assert all((ra.probe_id, ra.repeat) == (rb.probe_id, rb.repeat) for ra, rb in pairs)


def test_comparing_different_scales_is_one_line(tmp_path):
    ours = write_run(tmp_path / "ours", LENGTHS, DEPTHS)
    theirs = write_evalscope_report(tmp_path / "es", LENGTHS, DEPTHS)
    result = plot(str(ours), "--compare", str(theirs), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "a difference needs one scale" in lines[0]


def test_compare_output_is_reproducible_with_the_seed(tmp_path):
    a = write_gkamradt_v2(tmp_path / "a.jsonl", LENGTHS, DEPTHS, seeds=range(8), score=lambda L, D: 0.3)
    b = write_gkamradt_v2(tmp_path / "b.jsonl", LENGTHS, DEPTHS, seeds=range(8), score=lambda L, D: 0.5)
    first = plot(str(a), "--compare", str(b), "-o", str(tmp_path / "o1"), "--seed", "3")
    second = plot(str(a), "--compare", str(b), "-o", str(tmp_path / "o2"), "--seed", "3")
    assert first.exit_code == 0, first.output
    pick = [line for line in first.output.splitlines() if "95% CI" in line or "p =" in line]
    assert pick and pick == [line for line in second.output.splitlines() if "95% CI" in line or "p =" in line]
    json.dumps([line for line in pick])  # plain text, nothing unprintable
