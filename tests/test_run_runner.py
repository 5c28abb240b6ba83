"""The runner on the real SmolLM2-135M-Instruct (CPU): needles are found in both forms, runs resume after a
kill -9 without losing or duplicating rows, and mismatched or bad runs refuse cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import ResultsError
from kanana_longctx.probes.build import ProbeRequest, build_probe_set
from kanana_longctx.results import load_results, read_run_info
from kanana_longctx.options import RunOptions
from kanana_longctx.run.runner import execute

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_loaded(smollm2_source):
    from kanana_longctx.backends.local import load_model

    return load_model(smollm2_source, RunOptions(device="cpu"))


def _probes(tokenizer, form: str, **kwargs):
    request = ProbeRequest(lengths=(500, 1500), depths=(0, 50, 100), haystack="noise", form=form, **kwargs)
    return build_probe_set(request, tokenizer)


@pytest.mark.parametrize("form", ["qaform", "retform"])
def test_smollm2_finds_needles_in_noise(form, smollm2_tokenizer, smollm2_loaded, tmp_path):
    probe_set = _probes(smollm2_tokenizer, form)
    summary = execute(probe_set, RunOptions(), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    records, warnings = load_results(tmp_path)
    assert not warnings
    assert summary.backend.engine == "fast"
    assert sorted(r.probe_id for r in records) == sorted(p.probe_id for p in probe_set.probes)
    for r in records:
        assert r.expected in r.output, (r.probe_id, r.output)
        assert r.score == 1.0
        assert r.n_tokens == r.length
    # prefix reuse really happened: deeper needles computed fewer prefill tokens than the prompt holds
    assert any(r.prefill_tokens < r.n_tokens for r in records)
    info = read_run_info(tmp_path)
    assert info.form == form and info.engine == "fast" and info.versions["transformers"]


@pytest.mark.parametrize("variant", ["as on cpu", "gpu layout"])
def test_fast_and_plain_engines_agree_on_smollm2(variant, smollm2_tokenizer, smollm2_loaded, tmp_path, monkeypatch):
    """Prefix reuse, split attention and the static decode step change no greedy output (float32 on CPU).
    "gpu layout" forces what a GPU run does: fixed-shape attention tiles, probes batched over 3 KV buffer rows
    (prefixes copied between rows) and prompts prefilled in several chunks, so the batching bookkeeping is checked
    on a real model too."""
    if variant == "gpu layout":
        from kanana_longctx.backends import fast as fast_backend
        from kanana_longctx.kernels import choice
        from kanana_longctx.plan.memory import MemoryPlan

        monkeypatch.setattr(
            fast_backend, "memory_plan_for", lambda loaded, tokens, probes, cap=0.0, tile=0: MemoryPlan(3, 512, 0, 0)
        )
        monkeypatch.setattr(choice, "tile_tokens", lambda kernel, device: 128)
    probe_set = _probes(smollm2_tokenizer, "qaform")
    ours = execute(probe_set, RunOptions(engine="fast"), tmp_path / "fast", loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    hf = execute(probe_set, RunOptions(engine="hf"), tmp_path / "hf", loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    # the fast loop says where its time went; the plain loop cannot split generate() into phases
    assert ours.prefill_seconds > 0 and ours.decode_seconds > 0 and ours.setup_seconds > 0
    assert ours.setup_seconds + ours.prefill_seconds + ours.decode_seconds <= ours.wall_seconds
    assert hf.prefill_seconds == hf.decode_seconds == hf.setup_seconds == 0.0
    assert 0 < ours.computed_flops < hf.computed_flops  # prefix reuse
    fast_records = {r.probe_id: r for r in load_results(tmp_path / "fast")[0]}
    fast = {probe_id: r.output for probe_id, r in fast_records.items()}
    plain = {r.probe_id: r.output for r in load_results(tmp_path / "hf")[0]}
    assert fast == plain
    # below the needle: the shorter depth-0 probe took everything but its question from the longer one
    shorter = min((p for p in probe_set.probes if p.depth == 0), key=lambda p: p.n_tokens)
    assert fast_records[shorter.probe_id].prefill_tokens <= shorter.n_tokens - shorter.haystack_end


def test_the_dry_runs_reuse_flops_are_the_runners_computed_flops(smollm2_tokenizer, smollm2_loaded, tmp_path):
    """The dry run's "with prefix reuse" comes from the same plan and FLOP code as the runner's count."""
    from kanana_longctx.plan.flops import ModelShape
    from kanana_longctx.probes.summary import summarize

    probe_set = build_probe_set(ProbeRequest(lengths=(300, 700), depths=(0, 50, 100), haystack="noise"), smollm2_tokenizer)
    ran = execute(probe_set, RunOptions(max_new_tokens=2), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    dry = summarize(probe_set, shape=ModelShape.from_config(smollm2_loaded.model.config), trimmed=True, rows=1)
    assert ran.backend.engine == "fast" and ran.kv_rows == 1  # the CPU plan: one KV row, as the dry run plans
    assert dry.reuse_flops == ran.computed_flops
    assert dry.flops == ran.effective_flops
    # the records count each probe's own suffix; the plan also the shared parts computed once for several
    assert sum(r.prefill_tokens for r in load_results(tmp_path)[0]) < dry.reuse_tokens < dry.total_tokens


def test_resume_skips_done_probes_and_refuses_another_configuration(smollm2_tokenizer, smollm2_loaded, tmp_path):
    probe_set = _probes(smollm2_tokenizer, "qaform")
    first = execute(probe_set, RunOptions(limit=2), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    assert first.ran == 2
    second = execute(probe_set, RunOptions(), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    assert (second.skipped, second.ran) == (2, len(probe_set.probes) - 2)
    ids = [r.probe_id for r in load_results(tmp_path)[0]]
    assert len(ids) == len(set(ids)) == len(probe_set.probes)
    before = (tmp_path / "results.jsonl").read_bytes()
    other = _probes(smollm2_tokenizer, "qaform", seed=7)
    with pytest.raises(ResultsError, match="different configuration"):
        execute(other, RunOptions(), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    assert (tmp_path / "results.jsonl").read_bytes() == before


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kanana_longctx", *args]


def test_kill_9_then_resume_completes_the_grid_without_duplicates(tmp_path, session_cache):
    out = tmp_path / "run"
    args = ["niah", "-H", "noise", "-l", "500,1000", "-d", "0,25,50,75,100", "--out", str(out)]
    env = {**os.environ, "KANANA_LONGCTX_CACHE": str(session_cache)}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(load_results(results)[0])
    assert 2 <= done_before < 10
    finished = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    records, _ = load_results(results)
    ids = [r.probe_id for r in records]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert f"{done_before} resumed" in finished.stdout.replace("\n", " ")


def test_torn_last_line_is_cut_before_resuming(tmp_path, smollm2_tokenizer, smollm2_loaded):
    probe_set = _probes(smollm2_tokenizer, "qaform")
    execute(probe_set, RunOptions(limit=1), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    with open(tmp_path / "results.jsonl", "ab") as handle:
        handle.write(b'{"probe_id": "L500-D50", "length": 5')  # what a kill in the middle of a write leaves
    records, warnings = load_results(tmp_path)
    assert len(records) == 1 and warnings
    execute(probe_set, RunOptions(), tmp_path, loaded=smollm2_loaded, tokenizer=smollm2_tokenizer)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(probe_set.probes)
    assert all(json.loads(line)["probe_id"] for line in lines)


@pytest.mark.parametrize(
    "args,message",
    [
        (["-m", "/nonexistent/model"], "no such file or directory"),
        (["-m", "smollm3"], "no such file or directory"),
        (["--device", "cuda"], "CUDA is not available"),
        (["-l", "40000", "-d", "50"], "the model addresses"),
    ],
)
def test_bad_run_inputs_give_one_line_and_exit_2(args, message, tmp_path):
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["niah", "-H", "noise", "-l", "500", "-d", "0", *args, "--out", str(out)][:])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (out / "results.jsonl").exists()
