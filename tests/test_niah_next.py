"""What `niah` says it wrote and what to type next: the plot line after every run that wrote results (the bundled
demo with no arguments, an explicit directory that needs quoting, a resumed run), and after --dry-run where the
prompts are and the command that runs them, which is then run as printed.

The runs go through the real tokenizer, probe builder and runner; the answers come from a torch-free backend
registered in one line (as an endpoint would be), so no test here waits for weights. The slow test runs SmolLM2.
"""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from kanana_longctx.backends import registry
from kanana_longctx.backends.base import BackendInfo, ContextLimits, DeviceFigures, Generation, LoopStats
from kanana_longctx.backends.registry import BackendEntry
from kanana_longctx.cli import app
from kanana_longctx.results import load_results

runner = CliRunner()


class Echo:
    """Answers every probe with its expected value; counts its loads (a finished run must not load)."""

    loads = 0

    def __init__(self, request):
        self.request = request

    @staticmethod
    def claims(options) -> bool:
        return True

    def context(self) -> ContextLimits:
        return ContextLimits(native=8192, maximum=8192, fixed=True)

    def load(self) -> BackendInfo:
        Echo.loads += 1
        return BackendInfo(engine="echo", endpoint={"url": "http://127.0.0.1:1/v1"})

    def run(self, job, sink) -> LoopStats:
        for probe in job.pending:
            sink.write([Generation(probe, f" {probe.expected}", 2, False, 0.0, probe.n_tokens)])
        return LoopStats(computed_flops=0.0)

    def close(self, ran: bool) -> DeviceFigures:
        return DeviceFigures()


@pytest.fixture
def echo(monkeypatch, smollm2_tokenizer):
    monkeypatch.setitem(registry.BACKENDS, "echo", BackendEntry("test_niah_next:Echo", local=False))
    monkeypatch.setattr("kanana_longctx.tokenizer.load_tokenizer", lambda source, **kw: smollm2_tokenizer)
    Echo.loads = 0
    return Echo


def _next_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("next: ")]


def test_the_demo_with_no_arguments_ends_with_the_plot_line(echo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["niah"])
    assert result.exit_code == 0, result.output
    assert _next_lines(result.stdout) == ["next: kanana-longctx plot runs/smollm2-qaform-en-quick"]
    assert result.stdout.rstrip().endswith("next: kanana-longctx plot runs/smollm2-qaform-en-quick")
    records, _ = load_results(tmp_path / "runs" / "smollm2-qaform-en-quick")
    assert len(records) == 20 and echo.loads == 1


def test_dry_run_says_how_to_run_it_and_that_command_runs_then_resumes(echo, tmp_path):
    out = tmp_path / "my runs" / "$demo"  # a space and a dollar: the printed path must paste as one word
    typed = ["niah", "--dry-run", "-l", "300,600", "-d", "0,100", "-H", "noise", "--seed", "3", "--params", "135M",
             "-o", str(out)]
    dry = runner.invoke(app, typed)
    assert dry.exit_code == 0, dry.output
    assert f"wrote {out / 'prompts.jsonl'}" in dry.stdout and "without --dry-run" in dry.stdout
    (line,) = _next_lines(dry.stdout)
    words = shlex.split(line[len("next: "):])
    assert words[:2] == ["kanana-longctx", "niah"] and "--dry-run" not in words and "--params" not in words
    assert words[-2:] == ["--out", str(out)]
    assert words[2:-2] == ["--lengths", "300,600", "--depths", "0,100", "--haystack", "noise", "--seed", "3"]
    assert echo.loads == 0

    run = runner.invoke(app, words[1:])  # exactly what was printed
    assert run.exit_code == 0, run.output
    assert _next_lines(run.stdout) == [f"next: kanana-longctx plot {shlex.quote(str(out))}"]
    assert shlex.split(_next_lines(run.stdout)[0])[-1] == str(out)
    assert len(load_results(out)[0]) == 4 and echo.loads == 1

    resumed = runner.invoke(app, words[1:])
    assert resumed.exit_code == 0, resumed.output
    assert _next_lines(resumed.stdout) == _next_lines(run.stdout)
    assert "nothing to run" in resumed.stdout and echo.loads == 1  # a finished run loads nothing


def test_flags_and_negative_flags_are_rebuilt_as_typed(echo, tmp_path):
    out = tmp_path / "d"
    result = runner.invoke(app, ["niah", "--dry-run", "-l", "300", "-d", "50", "--no-yarn", "--trust-remote-code",
                                 "--with-ids", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (line,) = _next_lines(result.stdout)
    words = shlex.split(line)
    assert "--no-yarn" in words and "--trust-remote-code" in words and "--with-ids" not in words


def test_ctrl_c_keeps_the_finished_probes_and_says_the_same_command_resumes(echo, tmp_path, monkeypatch):
    out = tmp_path / "stop"
    real_run = Echo.run

    def run_then_interrupt(self, job, sink):
        sink.write([Generation(job.pending[0], f" {job.pending[0].expected}", 2, False, 0.0, 1)])
        raise KeyboardInterrupt

    monkeypatch.setattr(Echo, "run", run_then_interrupt)
    args = ["niah", "-l", "300", "-d", "0,100", "-H", "noise", "-o", str(out)]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130
    assert stopped.stderr == f"error: interrupted; the finished probes are kept in {out}: the same command resumes\n"
    assert len(load_results(out)[0]) == 1
    monkeypatch.setattr(Echo, "run", real_run)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0 and "(1 run now, 1 resumed)" in resumed.stdout


@pytest.mark.slow
def test_a_real_smollm2_run_ends_with_the_plot_line(tmp_path):
    out = tmp_path / "real"
    result = runner.invoke(app, ["niah", "-l", "300", "-d", "50", "-H", "noise", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1] == f"next: kanana-longctx plot {out}"
    assert len(load_results(out)[0]) == 1
