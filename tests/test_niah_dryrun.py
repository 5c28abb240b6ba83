"""`kanana-longctx niah --dry-run` end to end with the real SmolLM2 tokenizer, its errors, and the hand-off to the
runner (checked by what the runner is asked to do, not by running a model)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app

runner = CliRunner()

REQUIRED = (
    "length", "depth", "n_tokens", "needle_token_start", "needle_token_end", "expected", "prompt", "form", "lang",
    "seed", "haystack",
)


@pytest.fixture
def fast_tokenizer(monkeypatch, smollm2_tokenizer):
    """Skip the 2 s tokenizer load per invocation; record which model source was asked for."""
    asked = []

    def load(source, *, trust_remote_code=False):
        asked.append((source, trust_remote_code))
        return smollm2_tokenizer

    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", load)
    return asked


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_dry_run_with_the_real_tokenizer_load(tmp_path, smollm2_tokenizer):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["niah", "--dry-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _lines(out / "prompts.jsonl")
    assert len(rows) == 20  # the quick preset: 4 lengths x 5 depths
    for row in rows:
        assert all(key in row for key in REQUIRED)
        assert (row["form"], row["lang"], row["haystack"], row["seed"]) == ("qaform", "en", "builtin:en", 0)
        ids = smollm2_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert len(ids) == row["n_tokens"] == row["length"]
    assert "probes" in result.stdout and "20 = 4 lengths x 5 depths" in result.stdout
    assert str(out / "prompts.jsonl") in result.stdout.replace("\n", "")


def test_korean_retform_grid_options_and_flops(tmp_path, fast_tokenizer, smollm2_tokenizer):
    out = tmp_path / "ko"
    args = [
        "niah", "--dry-run", "-o", str(out), "--lang", "ko", "--form", "retform", "--lengths", "1000:3000:1000",
        "--depths", "0,50,100", "--haystack", "noise", "--seed", "7", "--params", "8B", "--with-ids",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _lines(out / "prompts.jsonl")
    assert [(r["length"], r["depth"]) for r in rows] == [(L, d) for L in (1000, 2000, 3000) for d in (0.0, 50.0, 100.0)]
    for row in rows:
        assert row["lang"] == "ko" and row["form"] == "retform" and row["seed"] == 7 and row["haystack"] == "noise:ko"
        assert row["prompt"].endswith("특별한 마법의 숫자는") and row["prompt"].count(row["expected"]) == 1
        assert smollm2_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] == row["input_ids"]
    assert "prefill FLOPs" in result.stdout and "8.00 G params" in result.stdout
    source, trust = fast_tokenizer[0]
    assert source.spec == "smollm2" and trust is False


def test_default_out_dir_is_named_after_model_form_lang_and_grid(tmp_path, fast_tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["niah", "--dry-run", "--preset", "quick", "--lang", "ko"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "smollm2-qaform-ko-quick" / "prompts.jsonl").is_file()
    result = runner.invoke(app, ["niah", "--dry-run", "-l", "2000", "-d", "50", "--task", "absent"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "smollm2-absent-qaform-en-custom" / "prompts.jsonl").is_file()


def test_task_options_and_repeats_reach_the_probes_and_the_summary(tmp_path, fast_tokenizer, smollm2_tokenizer):
    from kanana_longctx.probes import ProbeRequest, build_probe_set
    from kanana_longctx.plan.memory import MAX_ROWS
    from kanana_longctx.plan.reuse import plan_reuse, planned_tokens

    out = tmp_path / "mk"
    args = ["niah", "--dry-run", "-o", str(out), "-l", "2000,3000", "-d", "0,50,100", "--task", "multikey",
            "--distractors", "2", "--repeats", "2", "--form", "retform"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _lines(out / "prompts.jsonl")
    assert len(rows) == 12 and {r["repeat"] for r in rows} == {0, 1}
    assert all(r["task"] == "multikey" and len(r["distractor_values"]) == 2 for r in rows)
    assert rows[1]["probe_id"] == "multikey-L2000-D0-R1"
    text = " ".join(result.stdout.split())
    assert "12 = 2 lengths x 3 depths x 2 repeats" in text
    assert "multikey: 1 asked key + 2 distractors (3 needles per probe)" in text
    # the reuse share is the runner's plan for exactly these probes
    request = ProbeRequest(lengths=(2000, 3000), depths=(0, 50, 100), task="multikey", distractors=2, repeats=2,
                           form="retform")
    probe_set = build_probe_set(request, smollm2_tokenizer)
    ids = [p.input_ids for p in probe_set.probes]
    planned = planned_tokens(plan_reuse(ids, probe_set.shared_prefix_ids, MAX_ROWS), [len(x) for x in ids])
    assert f"{planned:,} to prefill with prefix reuse ({1 - planned / 30000:.1%} reused)" in text
    assert f"answer budget {probe_set.max_new_tokens} new tokens" in text


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--lang", "fr"], "unknown language 'fr'"),
        (["--form", "chat"], "unknown form 'chat'"),
        (["--depths", "0,150"], "outside 0..100"),
        (["--lengths", "1000,abc"], "cannot parse lengths 'abc'"),
        (["--lengths", "60"], "too small for this template"),
        (["--haystack", "/nonexistent/hay"], "not found"),
        (["--needle", "no value"], "needs --expected"),
        (["--params", "lots"], "cannot parse parameter count"),
        (["--task", "ruler"], "unknown task 'ruler'"),
        (["--task", "multikey", "--values", "3"], "--values applies to --task multivalue only"),
        (["--task", "multikey", "--needle", "Key {value}."], "--task single only"),
        (["--repeats", "0"], "--repeats must be between"),
        (["--model", "/nonexistent/model"], "no such file or directory"),
        (["--model", "nobody/nothing"], "not in the local Hugging Face cache"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = runner.invoke(app, ["niah", "--dry-run", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_haystack_file_errors(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait. Oui.".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    for name, fragment in (("latin1.txt", "not UTF-8"), ("empty.txt", "is empty")):
        result = runner.invoke(app, ["niah", "--dry-run", "-o", str(tmp_path / "o"), "-H", str(tmp_path / name)])
        assert result.exit_code == 2 and fragment in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_tokenizer_that_cannot_be_loaded(tmp_path):
    model = tmp_path / "broken"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["niah", "--dry-run", "-o", str(tmp_path / "o"), "-m", str(model)])
    assert result.exit_code == 2 and "cannot load a tokenizer" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_dry_run_refuses_to_mix_with_an_existing_run(tmp_path, fast_tokenizer):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text('{"probe_id": "L500-D0"}\n', encoding="utf-8")
    result = runner.invoke(app, ["niah", "--dry-run", "-o", str(out)])
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert not (out / "prompts.jsonl").exists()
    again = runner.invoke(app, ["niah", "--dry-run", "-o", str(out), "--overwrite"])
    assert again.exit_code == 0 and (out / "prompts.jsonl").is_file()


def test_without_dry_run_the_runner_gets_the_probe_set_and_run_options(tmp_path, fast_tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr("kanana_longctx.run.runner.run_niah", lambda *a, **k: calls.append((a, k)))
    args = [
        "niah", "-o", str(tmp_path / "r"), "--lengths", "1000", "--depths", "0,100", "--yarn", "--yarn-factor", "4",
        "--device", "cpu", "--dtype", "float32", "--attn", "sdpa", "--engine", "hf", "--batch-size", "2",
        "--max-new-tokens", "12", "--limit", "1", "--overwrite", "--trust-remote-code", "--max-memory", "50",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (probe_set, options, out_dir, _console), kwargs = calls[0]
    assert [p.probe_id for p in probe_set.probes] == ["L1000-D0", "L1000-D100"] and out_dir == tmp_path / "r"
    assert (options.device, options.dtype, options.attn, options.engine) == ("cpu", "float32", "sdpa", "hf")
    assert (options.yarn, options.yarn_factor, options.batch_size, options.max_new_tokens) == (True, 4.0, 2, 12)
    assert (options.limit, options.overwrite, options.trust_remote_code, options.model) == (1, True, True, "smollm2")
    assert options.max_memory_gib == 50.0
    assert kwargs["tokenizer"] is not None and fast_tokenizer[0][1] is True
    assert not (tmp_path / "r" / "prompts.jsonl").exists()


def test_help_has_examples():
    result = runner.invoke(app, ["niah", "--help"])
    assert result.exit_code == 0 and "Examples" in result.stdout and "--dry-run" in result.stdout
