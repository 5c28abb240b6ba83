"""Two messages a new user met: `-d -10` is answered about depths (not with the length syntax), and a broken
JSON file, wherever the tool reads one from the user (a model's config.json for niah and config, run.json on
resume and in plot, results rows, another tool's results), is one line naming the file, line and column and what
is wrong, in words ("unterminated string", never "... starting at at line 14")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app
from kanana_longctx.errors import ResultsError

runner = CliRunner()

# 13 good lines, then a string that never ends (the file was cut): the place the user saw reported as "starting at at line 14"
BROKEN = "{\n" + "".join(f'  "k{i}": {i},\n' for i in range(12)) + '  "model": "smollm2'
WHERE = "invalid JSON at line 14, column 12: unterminated string"


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and " at at " not in result.stderr and "starting at" not in result.stderr
    return result.stderr


def test_the_broken_text_really_breaks_where_we_say():
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(BROKEN)
    assert (info.value.lineno, info.value.colno, info.value.msg) == (14, 12, "Unterminated string starting at")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-d", "-10"], "error: depth -10 is outside 0..100 (percent)\n"),
        (["-d", "50,-10"], "error: depth -10 is outside 0..100 (percent)\n"),
        (["-d", "half"], "error: cannot parse depths 'half' (use 0,50,100 or 0:100:25)\n"),
        (["-l", "-1000"], "error: length -1000 is not a positive whole number of tokens\n"),
        (["-l", "abc"], "error: cannot parse lengths 'abc' (use 1000,2000 or 1000:32000:1000)\n"),
    ],
)
def test_grid_messages_speak_of_what_was_given(tmp_path, args, expected):
    out = tmp_path / "o"
    assert one_line(runner.invoke(app, ["niah", "--dry-run", "-o", str(out), *args])) == expected
    assert not out.exists()


def test_a_negative_zero_depth_is_depth_zero():
    from kanana_longctx.probes.grid import parse_depths

    assert [f"D{d:g}" for d in parse_depths("-0,50")] == ["D0", "D50"]


def test_a_models_broken_config_json_in_niah_and_config(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(BROKEN, encoding="utf-8")
    niah = one_line(runner.invoke(app, ["niah", "--dry-run", "-m", str(model), "-o", str(tmp_path / "o")]))
    assert niah == f"error: cannot load a tokenizer from {model}: {model / 'config.json'}: {WHERE}\n"
    config = one_line(runner.invoke(app, ["config", str(model)]))
    assert config == f"error: {model / 'config.json'}: {WHERE}\n"


def test_the_model_config_loader_names_the_place(tmp_path):
    from kanana_longctx.backends.local import load_config
    from kanana_longctx.errors import ModelNotFound
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.options import RunOptions

    (tmp_path / "config.json").write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ModelNotFound) as info:
        load_config(resolve_model(str(tmp_path)), RunOptions())
    assert str(info.value).endswith(f"{tmp_path / 'config.json'}: {WHERE}")


@pytest.fixture
def resume_dir(tmp_path, monkeypatch, smollm2_tokenizer):
    """A run directory for `niah -l 300 -d 50 -H noise` (the real runner; the tokenizer from the session)."""
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    out = tmp_path / "run"
    out.mkdir()
    return out


ARGS = ["niah", "-l", "300", "-d", "50", "-H", "noise", "--device", "cpu"]


def test_resuming_on_a_broken_run_json(resume_dir):
    (resume_dir / "run.json").write_text(BROKEN, encoding="utf-8")
    message = one_line(runner.invoke(app, [*ARGS, "-o", str(resume_dir)]))
    assert message == f"error: {resume_dir / 'run.json'}: {WHERE}\n"


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"model": "smollm2", "form": "qaform"}', "not a complete run.json of this tool: no lang, haystack, "
                                                     "haystack_hash, grid, seed, yarn, max_new_tokens"),
        ("[1, 2]", "not a run.json: it holds an array, not an object"),
    ],
)
def test_resuming_on_a_foreign_run_json(resume_dir, content, fragment):
    (resume_dir / "run.json").write_text(content, encoding="utf-8")
    message = one_line(runner.invoke(app, [*ARGS, "-o", str(resume_dir)]))
    assert fragment in message and "__init__" not in message


def test_a_broken_results_row_names_its_line_and_column(tmp_path):
    from kanana_longctx.results import load_results

    path = tmp_path / "results.jsonl"
    good = json.dumps({"length": 1000, "depth": 0, "score": 1})
    path.write_text(f'{good}\n{{"length": 1000, "depth": 50, "score: 1}}\n{good}\n', encoding="utf-8")
    with pytest.raises(ResultsError) as info:
        load_results(path)
    assert str(info.value) == f"{path}: invalid JSON at line 2, column 31: unterminated string"
    path.write_text(f"{good}\n[1]\n{good}\n", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"line 2 is an array, not an object"):
        load_results(path)
    plot = one_line(runner.invoke(app, ["plot", str(tmp_path), "-o", str(tmp_path / "plots")]))
    assert "line 2 is an array, not an object" in plot


def test_another_tools_broken_result_file_in_plot(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    row = {"model": "m", "context_length": 1000, "depth_percent": 0, "score": 10, "model_response": "x",
           "needle": "n"}
    (results / "a_results.json").write_text(json.dumps(row), encoding="utf-8")
    (results / "b_results.json").write_text(BROKEN, encoding="utf-8")
    message = one_line(runner.invoke(app, ["plot", str(results), "--format-in", "gkamradt", "-o", str(tmp_path / "o")]))
    assert message == f"error: {results / 'b_results.json'}: {WHERE}\n"


def test_out_of_gpu_memory_is_one_line_with_what_to_do(capsys):
    """torch's OutOfMemoryError (matched by name, so the CLI needs no torch) is not an 'internal error'."""
    import typer

    from kanana_longctx.cli.errors import friendly_errors

    class OutOfMemoryError(RuntimeError):
        pass

    @friendly_errors
    def run():
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 MiB. GPU 0 has a total capacity ...")

    with pytest.raises(typer.Exit) as caught:
        run()
    err = capsys.readouterr().err
    assert caught.value.exit_code == 1 and err.count("\n") == 1 and "internal error" not in err
    assert "out of GPU memory (CUDA out of memory)" in err and "same command resumes" in err
