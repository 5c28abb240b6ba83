"""`kanana-longctx bench` end to end on the CPU: the tiny random shape, the real SmolLM2 tokenizer, the report's
table and JSON. The numbers that matter come from the GPU (docs/performance.md); here the plumbing is checked."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kanana_longctx.cli import app

runner = CliRunner()


def test_tiny_bench_reports_the_table_and_writes_its_json(tmp_path, smollm2_source):
    out = tmp_path / "bench.json"
    args = ["bench", "--shape", "tiny", "--preset", "quick", "--naive-subset", "4", "--tokenizer", "smollm2"]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["grid"], report["probes"], report["naive_probes"]) == ("quick", 20, 4)
    assert report["prompt_tokens"] == 5 * (500 + 1000 + 2000 + 4000)
    assert 0 < report["ours_computed_flops"] < report["flops"]  # the haystack prefix was reused
    assert report["naive_s"] > 0 and report["ours_subset_s"] > 0
    phases = report["ours_setup_s"] + report["ours_prefill_s"] + report["ours_decode_s"]
    assert report["ours_setup_s"] > 0 and phases <= report["ours_s"]
    assert (report["engine"], report["kv_rows"], report["chunk_tokens"]) == ("fast", 1, 2048)
    assert report["max_memory_gib"] == 0.0
    assert report["logits_rel_err_ours"] < 1e-4 and report["argmax_agree"] == "3/3"  # float32 on the CPU
    assert "KV rows x prefill chunk" in result.stdout and "1 x 2048 tokens" in result.stdout


def test_unknown_shape_is_one_line_and_no_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--shape", "llama-1t", "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "unknown model shape 'llama-1t'" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_the_moe_shape_compares_reuse_with_the_plain_loop_on_the_subset(tmp_path, smollm2_source):
    """--subset-only: ours (prefix reuse on the model's cache: the fast engine does not take MoE) and the naive
    loop on the same spread probes; the report's grid is that subset."""
    out = tmp_path / "bench.json"
    args = ["bench", "--shape", "tiny-moe", "--lengths", "300,600", "--depths", "0,50,100", "--naive-subset", "4",
            "--subset-only", "--tokenizer", "smollm2", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["engine"] == "reuse" and report["attention"] == "sdpa"
    assert (report["grid"], report["probes"], report["naive_probes"]) == ("custom subset", 4, 4)
    assert report["ours_s"] == report["ours_subset_s"] > 0 and report["naive_s"] > 0
    assert 0 < report["ours_computed_flops"] < report["flops"]
    assert report["logits_rel_err_ours"] < 1e-4 and report["argmax_agree"] == "3/3"
    assert "naive loop, 4-probe subset" in result.stdout and "ours (reuse), custom subset" in result.stdout


def test_the_mla_shape_runs_the_whole_grid_with_reuse(tmp_path, smollm2_source):
    out = tmp_path / "bench.json"
    args = ["bench", "--shape", "tiny-mla", "--lengths", "300,600", "--depths", "0,100", "--naive-subset", "0",
            "--tokenizer", "smollm2", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["engine"], report["probes"], report["naive_probes"]) == ("reuse", 4, 0)
    assert report["ours_s"] > 0 and report["logits_rel_err_ours"] < 1e-4


def test_subset_only_without_a_subset_is_one_line(tmp_path):
    result = runner.invoke(app, ["bench", "--shape", "tiny", "--naive-subset", "0", "--subset-only"])
    assert result.exit_code == 2 and "--subset-only needs --naive-subset" in result.stderr
