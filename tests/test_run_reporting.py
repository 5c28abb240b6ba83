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
