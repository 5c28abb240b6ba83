"""Property: whatever run.json, results lines and option values `niah` and `plot` are given, they exit 0 or 2, print
no traceback or internal error, and change no input file unless the command got as far as running.

niah runs for real up to the seam where the weights would load (LocalModel.load, replaced by one that stops the run
with its own line): the options, the model's config (a Llama config.json, no weights), the probes built with the
real SmolLM2 tokenizer, the run directory's lock, run.json and results.jsonl all go through the real code. Option
values alone go through --dry-run, which needs no config at all. CPU only, bounded examples."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import BadInput
from kanana_longctx.run.lock import LOCK_NAME

runner = CliRunner()
STOP = "stopped where the weights would load"
GOOD_ROW = {"probe_id": "L300-D0", "length": 300, "depth": 0.0, "score": 1.0, "expected": "1", "output": "1",
            "n_tokens": 300, "needle_token_start": 0, "seed": 0, "form": "retform", "lang": "en",
            "haystack": "noise:en"}

odd_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=5,
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def run_json_texts(draw, good: dict) -> str | None:
    """run.json texts around `good`, the run.json the command writes itself for the grid under test."""
    kind = draw(st.sampled_from(["none", "good", "mutated", "mutated", "raw", "deep", "non-object"]))
    if kind == "none":
        return None
    if kind == "raw":
        return draw(st.text(alphabet=string.printable, max_size=30))
    if kind == "deep":
        return '{"grid": ' + deep(draw(st.integers(100, 5000))) + "}"
    if kind == "non-object":
        return json.dumps(draw(st.one_of(st.lists(odd_values, max_size=3), st.integers(), st.text(max_size=5))))
    data = dict(good)
    if kind == "mutated":
        for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=3)):
            if draw(st.booleans()):
                data[key] = draw(odd_values)
            else:
                data.pop(key, None)
    return json.dumps(data)


@st.composite
def results_texts(draw) -> str | None:
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["good", "mutated", "mutated", "raw", "deep", "torn"]))
        if kind == "raw":
            lines.append(draw(st.text(alphabet=string.printable.replace("\n", ""), max_size=20)))
        elif kind == "deep":
            lines.append(deep(draw(st.integers(100, 5000))))
        elif kind == "torn":
            lines.append(json.dumps(GOOD_ROW)[: draw(st.integers(1, 30))])
        else:
            row = dict(GOOD_ROW)
            if kind == "mutated":
                for key in draw(st.lists(st.sampled_from(sorted(GOOD_ROW) + ["task", "repeat", "keys", "extra"]),
                                         min_size=1, max_size=3)):
                    row[key] = draw(odd_values)
            lines.append(json.dumps(row))
    if not lines and draw(st.booleans()):
        return None
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


int_text = st.one_of(st.integers(-(10**12), 10**12).map(str), st.sampled_from(["0", "1", "-1", "3", "4096"]))
float_text = st.one_of(st.floats().map(str), st.sampled_from(["0", "1", "-1", "nan", "inf", "1e308", "4.4"]))
junk_text = st.sampled_from(["abc", "", "1.5"])  # not a number of the option's kind: typer's own usage error
INTEGER = ["--batch-size", "--max-new-tokens", "--limit", "--repeats", "--yarn-original", "--seed", "--depth-count",
           "--gpus", "--tp", "--distractors"]
FLOAT = ["--yarn-factor", "--max-memory"]
CHOICES = {"--engine": ["auto", "fast", "hf", "turbo", ""], "--dtype": ["auto", "bf16", "float32", "FLOAT32"],
           "--attn": ["auto", "sdpa", "eager", "cudnn", "flash"], "--device": ["auto", "cpu", "tpu"],
           "--task": ["single", "multikey", "nope"], "--form": ["auto", "retform", "chat"]}


@st.composite
def option_lists(draw) -> list[str]:
    args: list[str] = []
    for flag in draw(st.lists(st.sampled_from(INTEGER + FLOAT), max_size=3, unique=True)):
        text = int_text if flag in INTEGER else float_text
        args += [flag, draw(st.one_of(text, text, text, text, text, junk_text))]
    for flag in draw(st.lists(st.sampled_from(sorted(CHOICES)), max_size=2, unique=True)):
        args += [flag, draw(st.sampled_from(CHOICES[flag]))]
    if draw(st.booleans()):
        args.append("--yarn")
    return args


def snapshot(directory: Path) -> dict[str, bytes]:
    """The directory's files, without the run-directory lock file (the one thing a refused run may leave: it was
    locked before it read what it refused, so that nothing could change under it)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != LOCK_NAME}


def assert_clean(result, allowed=(0, 2)) -> None:
    """Exit as allowed, no traceback, and for exit 2 one `error:` line, or click's own message for a value that
    is not a number at all (`--batch-size abc`: typer's usage error, also exit 2, before the command runs)."""
    assert result.exit_code in allowed, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 2 and "Invalid value for" not in result.output:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and result.stderr.splitlines()[-1].startswith("error: "), result.output


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    """A Llama config.json with 4096 positions and no weights: what the checks before the load read."""
    path = tmp_path_factory.mktemp("llama-config")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
              "max_position_embeddings": 4096, "vocab_size": 49152, "rope_theta": 10000.0, "rms_norm_eps": 1e-5}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _stop(self):
    raise BadInput(STOP)


def _use_seams(monkeypatch, tokenizer) -> None:
    from kanana_longctx.backends.local import LocalModel

    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: tokenizer)
    monkeypatch.setattr(LocalModel, "load", _stop)


@pytest.fixture
def seams(monkeypatch, smollm2_tokenizer):
    """The real SmolLM2 tokenizer without its load per example; the weights' load replaced by a stop."""
    _use_seams(monkeypatch, smollm2_tokenizer)


NIAH = ["-H", "noise", "-l", "300", "-d", "0", "-f", "retform", "--device", "cpu"]


@pytest.fixture(scope="module")
def good_run(config_dir, smollm2_tokenizer, tmp_path_factory) -> dict:
    """The run.json niah writes for the grid under test (it stops at the load), for the mutations to start from."""
    out = tmp_path_factory.mktemp("good") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_seams(monkeypatch, smollm2_tokenizer)
        result = runner.invoke(app, ["niah", "-m", str(config_dir), *NIAH, "--out", str(out)])
    assert STOP in result.stderr, result.output
    return json.loads((out / "run.json").read_text())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data(), results=results_texts(), overwrite=st.booleans())
def test_niah_on_a_malformed_run_directory(data, results, overwrite, config_dir, good_run, seams):
    run_json = data.draw(run_json_texts(good_run), label="run.json")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        if run_json is not None:
            (out / "run.json").write_text(run_json)
        if results is not None:
            (out / "results.jsonl").write_text(results)
        before = snapshot(out)
        args = ["niah", "-m", str(config_dir), *NIAH, "--out", str(out)] + (["--overwrite"] if overwrite else [])
        result = runner.invoke(app, args)
        assert_clean(result)  # a run stops at the load at the latest (exit 0: it had nothing to load for)
        if result.exit_code == 2 and STOP not in result.stderr:  # refused: nothing in the directory changed
            assert snapshot(out) == before, result.stderr
        else:  # accepted: run.json says what runs and how far it got
            status = json.loads((out / "run.json").read_text())["extra"]["status"]
            assert status == ("running" if result.exit_code else "complete"), result.output


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(options=option_lists())
def test_niah_dry_run_with_odd_option_values(options, seams):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        result = runner.invoke(app, ["niah", "--dry-run", "-H", "noise", "-l", "300", "-d", "0", "--out", str(out),
                                     *options])
        assert_clean(result)
        assert (result.exit_code == 0) == (out / "prompts.jsonl").is_file()
        if result.exit_code != 0:
            assert not out.exists() or not any(out.iterdir())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), results=results_texts(), dpi=st.sampled_from(["100", "-5", "20"]))
def test_plot_on_a_malformed_run_directory(data, results, dpi, good_run):
    run_json = data.draw(run_json_texts(good_run), label="run.json")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        if run_json is not None:
            (run / "run.json").write_text(run_json)
        if results is not None:
            (run / "results.jsonl").write_text(results)
        before = snapshot(run)
        result = runner.invoke(app, ["plot", str(run), "--out", str(Path(tmp) / "plots"), "--dpi", dpi])
        assert_clean(result)
        assert snapshot(run) == before  # plot never changes what it reads
