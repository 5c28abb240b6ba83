"""Everything is checked before anything destructive: a bad option, kernel, number or length is one line and exit
2 before `--overwrite` deletes a result, before a file is written, before a probe is built or weights load; `--yarn`
without `--yarn-original` takes the model's own native context and says so."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import BadInput
from kanana_longctx.options import RunOptions
from kanana_longctx.results import RunInfo, write_run_info
from kanana_longctx.run.check import validate_options

runner = CliRunner()


@pytest.fixture
def tokenizer_calls(monkeypatch, smollm2_tokenizer):
    """The real SmolLM2 tokenizer without its load per invocation; counts the loads and the probe builds."""
    calls = {"tokenizer": 0, "build": 0}

    def load(source, *, trust_remote_code=False):
        calls["tokenizer"] += 1
        return smollm2_tokenizer

    import kanana_longctx.probes as probes

    real_build = probes.build_probe_set

    def build(*args, **kwargs):
        calls["build"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", load)
    monkeypatch.setattr(probes, "build_probe_set", build)
    return calls


@pytest.fixture
def finished_run(tmp_path):
    """A run directory holding a result: what a wrong `--overwrite` would lose."""
    out = tmp_path / "run"
    out.mkdir()
    write_run_info(out, RunInfo(model="smollm2", form="qaform", lang="en", haystack="noise:en", haystack_hash="h",
                                grid={}, seed=0, yarn=None, max_new_tokens=20))
    (out / "results.jsonl").write_text('{"probe_id": "L500-D0", "length": 500, "depth": 0, "score": 1}\n')
    return out


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def one_error_line(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dtype", "bf16"], "unknown --dtype 'bf16' (choose from auto, bfloat16, float16, float32); bf16 is spelled"),
        (["--engine", "turbo"], "unknown --engine 'turbo' (choose from auto, fast, reuse, hf, endpoint)"),
        (["--device", "tpu"], "unknown --device 'tpu' (choose from auto, cpu, cuda)"),
        (["--attn", "flash"], "unknown --attn 'flash' (choose from auto, cudnn, fa3, fa2, sdpa, eager)"),
        (["--batch-size", "-1"], "--batch-size must be between 0 and 4,096, got -1"),
        (["--max-new-tokens", "-1"], "--max-new-tokens must be between 0 and 8,192, got -1"),
        (["--limit", "-1"], "--limit must be between 0 and"),
        (["--yarn", "--yarn-factor", "1e308"], "--yarn-factor must be between 1 and 128"),
        (["--yarn", "--yarn-factor", "1"], "factor must be greater than 1"),
        (["--yarn", "--yarn-original", "0"], "--yarn-original must be between 1"),
        (["--gpus", "-2"], "--gpus must be between 0 and 1,024"),
        (["--tp", "5000"], "--tp must be between 0 and 1,024"),
        (["--repeats", "0"], "--repeats must be between 1 and 1000"),
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--depth-count", "5000"], "the number of depths must be at most 1000"),
        (["-l", "10000000"], "length 10,000,000 is more than 2,097,152 tokens"),
        (["-H", "/nonexistent/haystack"], "not found"),
        (["-m", "/nonexistent/model"], "no such file or directory"),
    ],
)
def test_bad_options_are_refused_before_the_tokenizer_loads_and_overwrite_deletes(
    args, fragment, finished_run, tokenizer_calls
):
    before = snapshot(finished_run)
    result = runner.invoke(app, ["niah", "-H", "noise", "-l", "500", "--out", str(finished_run), "--overwrite", *args])
    one_error_line(result, fragment)
    assert tokenizer_calls == {"tokenizer": 0, "build": 0}
    assert snapshot(finished_run) == before


def test_a_kernel_this_machine_lacks_is_refused_before_probes_are_built_or_results_deleted(
    finished_run, tokenizer_calls
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --attn cudnn may exist here")
    before = snapshot(finished_run)
    for args, fragment in ((["--attn", "cudnn"], "--attn cudnn needs a CUDA device"),
                           (["--device", "cuda"], "CUDA is not available here")):
        result = runner.invoke(app, ["niah", "-H", "noise", "-l", "500", "-o", str(finished_run), "--overwrite", *args])
        one_error_line(result, fragment)
    assert tokenizer_calls["build"] == 0
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("yarn", [[], ["--yarn"]])
def test_lengths_past_the_models_context_are_refused_before_a_probe_is_built(yarn, tmp_path, tokenizer_calls):
    """SmolLM2's 8,192 native positions reach 36,044 with YaRN x4.4: a million-token grid is refused from the
    config alone (building it would take minutes and gigabytes)."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["niah", "-H", "noise", "-l", "1000000", "-d", "50", "-o", str(out), *yarn])
    one_error_line(result, "probes need 1,000,000 positions; the model addresses 36,044")
    assert tokenizer_calls["build"] == 0 and not out.exists()


def test_yarn_without_original_takes_the_models_native_context_and_says_so(smollm2_source, smollm2_tokenizer, tmp_path):
    from kanana_longctx.probes.build import ProbeRequest, build_probe_set
    from kanana_longctx.run.runner import check, preflight
    from kanana_longctx.run.reporting import NullReporter

    options = RunOptions(yarn=True, yarn_factor=2.0, device="cpu")
    notes = preflight(options, 1000, tokenizer=smollm2_tokenizer)
    assert "--yarn over the model's native context of 8,192 tokens (no --yarn-original given)" in notes
    probe_set = build_probe_set(ProbeRequest(lengths=(500,), depths=(50,), haystack="noise"), smollm2_tokenizer)
    ctx = check(probe_set, options, tmp_path / "run", NullReporter(), smollm2_tokenizer, None)
    assert ctx.info.yarn["original_max_position_embeddings"] == 8192 and ctx.info.yarn["factor"] == 2.0
    assert ctx.limits.native == 8192 and ctx.limits.maximum == 16384
    assert any("native context of 8,192" in note for note in ctx.notes)
    given = check(probe_set, RunOptions(yarn=True, yarn_factor=2.0, yarn_original=4096, device="cpu"),
                  tmp_path / "run", NullReporter(), smollm2_tokenizer, None)
    assert given.limits.native == 4096 and not any("native context" in note for note in given.notes)
    assert not (tmp_path / "run").exists()  # the check phase writes nothing


@pytest.mark.parametrize(
    "change",
    [{"batch_size": True}, {"max_new_tokens": float("nan")}, {"max_memory_gib": float("inf")}, {"yarn_factor": 0.5},
     {"yarn_original": -4}, {"engine": "Fast"}],
)
def test_library_callers_get_the_same_checks(change):
    with pytest.raises(BadInput):
        validate_options(RunOptions(**change))
