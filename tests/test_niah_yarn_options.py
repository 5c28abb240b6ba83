"""niah's YaRN numbers under config's names: they reach the run's options (betas too), are read as text so a bad
number is one line, and like config's they apply only with --yarn (a number without it is refused, not ignored)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kanana_longctx.cli import app

runner = CliRunner()


@pytest.fixture
def handed(monkeypatch, smollm2_tokenizer):
    """What niah hands the runner (no model is run)."""
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    calls = []
    monkeypatch.setattr("kanana_longctx.run.runner.run_niah", lambda *a, **k: calls.append(a))
    return calls


def test_the_yarn_numbers_reach_the_run_options(handed, tmp_path):
    args = ["niah", "-o", str(tmp_path / "r"), "-l", "300", "-d", "50", "--yarn", "--yarn-factor", "4",
            "--yarn-original", "8192", "--yarn-beta-fast", "32", "--yarn-beta-slow", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    options = handed[0][1]
    assert (options.yarn, options.yarn_factor, options.yarn_original) == (True, 4.0, 8192)
    assert (options.yarn_beta_fast, options.yarn_beta_slow) == (32.0, 1.0)


def test_unset_numbers_keep_the_recipe_defaults(handed, tmp_path):
    from kanana_longctx.options import RunOptions

    result = runner.invoke(app, ["niah", "-o", str(tmp_path / "r"), "-l", "300", "-d", "50", "--yarn"])
    assert result.exit_code == 0, result.output
    options, defaults = handed[0][1], RunOptions()
    assert (options.yarn_factor, options.yarn_original, options.yarn_beta_fast, options.yarn_beta_slow) == (
        defaults.yarn_factor, defaults.yarn_original, defaults.yarn_beta_fast, defaults.yarn_beta_slow)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--yarn", "--yarn-factor", "abc"], "--yarn-factor must be a number, got 'abc'"),
        (["--yarn", "--yarn-original", "4.5"], "--yarn-original must be an integer, got '4.5'"),
        (["--yarn", "--yarn-beta-fast", "inf"], "--yarn-beta-fast must be a finite number"),
        (["--yarn-factor", "2"], "--yarn-factor only applies with --yarn"),
        (["--no-yarn", "--yarn-factor", "2", "--yarn-original", "8192"],
         "--yarn-factor, --yarn-original only apply with --yarn"),
    ],
)
def test_bad_or_misplaced_numbers_are_one_line(handed, tmp_path, args, fragment):
    out = tmp_path / "r"
    result = runner.invoke(app, ["niah", "-o", str(out), "-l", "300", "-d", "50", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and fragment in result.stderr and result.stderr.count("\n") == 1
    assert not handed and not out.exists()
