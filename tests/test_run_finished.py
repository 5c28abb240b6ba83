"""A run whose directory already holds every probe resumes without loading weights: it says so, prints the
summary (naming what computed the rows) and the next command, exits 0. Checked on the real local backend with
SmolLM2 (the loader replaced by one that fails the test) and on the library path with a counting backend."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from kanana_longctx.backends.base import Generation
from kanana_longctx.cli import app
from kanana_longctx.results import ResultsWriter, load_results, write_run_info
from kanana_longctx.run import runner as run_runner
from kanana_longctx.run.records import record_of
from kanana_longctx.run.reporting import NullReporter

runner = CliRunner()
ARGS = ["niah", "-l", "300,600", "-d", "0,100", "-H", "noise", "--device", "cpu"]


def _finish_elsewhere(probe_set, options, out_dir, tokenizer) -> None:
    """What a finished run leaves: run.json from the runner's own check phase (with the facts a load would have
    added) and one scored row per probe."""
    ctx = run_runner.check(probe_set, options, out_dir, NullReporter(), tokenizer, None)
    out_dir.mkdir(parents=True)
    write_run_info(out_dir, dataclasses.replace(ctx.info, engine="fast", device="cpu", dtype="float32",
                                                attention="sdpa"))
    with ResultsWriter(out_dir / "results.jsonl") as writer:
        writer.append(record_of(Generation(p, f" {p.expected}", 2, False, 0.1, p.n_tokens), ctx.max_new_tokens)
                      for p in probe_set.probes)


@pytest.fixture
def no_weights(monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("weights were loaded for a finished run")

    monkeypatch.setattr("kanana_longctx.backends.local.load_model", load_model)


def test_a_finished_run_resumes_without_loading_weights(tmp_path, monkeypatch, smollm2_tokenizer, no_weights):
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    out = tmp_path / "done"
    handed = []
    with monkeypatch.context() as m:  # the probe set and options exactly as niah builds them for these ARGS
        m.setattr("kanana_longctx.run.runner.run_niah", lambda *a, **k: handed.append(a))
        assert runner.invoke(app, [*ARGS, "-o", str(out)]).exit_code == 0
    probe_set, options = handed[0][0], handed[0][1]
    _finish_elsewhere(probe_set, options, out, smollm2_tokenizer)
    before = (out / "results.jsonl").read_bytes(), (out / "run.json").read_bytes()

    result = runner.invoke(app, [*ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"nothing to run: all 4 probes of {out} already done; no weights loaded" in text
    assert "overall accuracy 1.000 over 4 probes (0 run now, 4 resumed); engine fast, attention sdpa, float32 on cpu" in text
    assert "wall" not in text  # nothing ran, so no timing line
    assert result.stdout.rstrip().splitlines()[-1] == f"next: kanana-longctx plot {out}"
    assert (out / "results.jsonl").read_bytes() == before[0]
    # run.json keeps what computed the rows; only its status says the directory is now complete
    was, now = json.loads(before[1]), json.loads((out / "run.json").read_text())
    assert now["extra"].pop("status") == "complete"
    was["extra"].pop("status", None)
    assert now == was


def test_a_partly_done_run_still_loads(tmp_path, monkeypatch, smollm2_tokenizer, no_weights):
    """The shortcut is for a finished directory only: one missing row means the weights are needed."""
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    out = tmp_path / "part"
    handed = []
    with monkeypatch.context() as m:
        m.setattr("kanana_longctx.run.runner.run_niah", lambda *a, **k: handed.append(a))
        runner.invoke(app, [*ARGS, "-o", str(out)])
    probe_set, options = handed[0][0], handed[0][1]
    _finish_elsewhere(probe_set, options, out, smollm2_tokenizer)
    rows = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "results.jsonl").write_text("\n".join(rows[:-1]) + "\n", encoding="utf-8")
    result = runner.invoke(app, [*ARGS, "-o", str(out)])
    assert result.exit_code == 3 and "weights were loaded for a finished run" in result.stderr


def test_the_library_skips_load_and_loop_and_merges_leftover_rank_files(tmp_path, monkeypatch, smollm2_tokenizer):
    from kanana_longctx.options import RunOptions
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set

    probe_set = build_probe_set(ProbeRequest(lengths=(300,), depths=(0, 100), haystack="noise"), smollm2_tokenizer)
    options = RunOptions(model="smollm2", device="cpu")
    out = tmp_path / "lib"
    _finish_elsewhere(probe_set, options, out, smollm2_tokenizer)
    rows = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "results.jsonl").write_text(rows[0] + "\n", encoding="utf-8")
    (out / "results.rank1.jsonl").write_text(rows[1] + "\n", encoding="utf-8")  # a crashed --gpus 2 run's row
    phases = []
    monkeypatch.setattr(run_runner, "load", lambda ctx: phases.append("load"))
    monkeypatch.setattr(run_runner, "loop", lambda ctx: phases.append("loop"))
    summary = run_runner.execute(probe_set, options, out, tokenizer=smollm2_tokenizer)
    assert not phases and (summary.ran, summary.skipped, summary.total) == (0, 2, 2)
    assert summary.accuracy == 1.0 and summary.backend.describe() == "engine fast, attention sdpa, float32 on cpu"
    assert len(load_results(out)[0]) == 2 and not (out / "results.rank1.jsonl").exists()
