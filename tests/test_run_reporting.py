"""The end-of-run summary the runner prints."""

from __future__ import annotations


def test_the_summary_says_where_the_time_went():
    """Phase seconds always; the prefill's TFLOP/s only on a GPU (a CPU rate would read as 0)."""
    import io

    from rich.console import Console

    from kanana_longctx.backends.base import BackendInfo
    from kanana_longctx.run.reporting import RunSummary, render_summary

    def text(device: str, rows: int = 0) -> str:
        out = io.StringIO()
        summary = RunSummary(
            out_dir="runs/x", total=4, skipped=0, ran=4, accuracy_by_length={1000: 1.0}, accuracy=1.0,
            wall_seconds=10.0, load_seconds=1.0,
            backend=BackendInfo(engine="fast", attention="cudnn", device=device, dtype="bfloat16"),
            computed_flops=4e15, prefill_seconds=8.0, decode_seconds=1.5, setup_seconds=0.4, kv_rows=rows, chunk_tokens=16384 * bool(rows),
        )  # fmt: skip
        render_summary(Console(file=out, width=200), summary)
        return out.getvalue()

    assert "setup 0.4 s, prefill 8.0 s (500 TFLOP/s on the computed FLOPs), decode 1.5 s" in text("cuda")
    assert "setup 0.4 s, prefill 8.0 s, decode 1.5 s" in text("cpu")
    assert "decode 1.5 s (2 KV rows, 16384-token chunks)" in text("cuda", rows=2)
    assert "decode 1.5 s (1 KV row, 16384-token chunks)" in text("cuda", rows=1)


def _record(length: int, score: float, outcome: str = ""):
    from kanana_longctx.results import ResultRecord

    return ResultRecord(probe_id=f"L{length}-{score}-{outcome}", length=length, depth=0.0, score=score, expected="1",
                        output="", n_tokens=length, needle_token_start=0, outcome=outcome)


def test_lengths_get_their_probe_count_and_a_wilson_interval_where_scores_are_binary():
    from kanana_longctx.run.reporting import length_accuracy

    rows = length_accuracy([_record(1000, 1.0), _record(1000, 1.0), _record(1000, 0.0), _record(2000, 0.5)])
    first, second = rows
    assert (first.length, first.probes, round(first.mean, 4)) == (1000, 3, 0.6667)
    # Wilson 95% for 2 of 3, from its closed form
    z, n, p = 1.959963984540054, 3, 2 / 3
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert abs(first.low - (centre - half)) < 1e-9 and abs(first.high - (centre + half)) < 1e-9
    assert second.probes == 1 and second.low != second.low  # a fractional score: no Bernoulli interval (NaN)


def test_the_summary_prints_intervals_and_the_failure_classes():
    import io

    from rich.console import Console

    from kanana_longctx.backends.base import BackendInfo
    from kanana_longctx.run.reporting import RunSummary, length_accuracy, render_summary
    from kanana_longctx.scoring import outcome_counts

    records = [_record(1000, 1.0, "found"), _record(1000, 0.0, "distractor"), _record(1000, 0.0, "truncated")]
    summary = RunSummary(
        out_dir="runs/x", total=3, skipped=0, ran=3, accuracy_by_length={1000: 1 / 3}, accuracy=1 / 3,
        wall_seconds=1.0, load_seconds=1.0, backend=BackendInfo(engine="hf", device="cpu"),
        by_length=length_accuracy(records), outcomes=outcome_counts(records),
    )
    out = io.StringIO()
    render_summary(Console(file=out, width=200), summary)
    text = out.getvalue()
    low, high = summary.by_length[0].low, summary.by_length[0].high
    assert f"{low:.2f}-{high:.2f}" in text and "0.33" in text
    for name in ("found", "distractor", "truncated"):
        assert name in text
    assert "another needle's value" in text and "cut off by max_new_tokens" in text
