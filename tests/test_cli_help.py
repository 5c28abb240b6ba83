"""Every command's --help, and config's tables, in an 80-column terminal (COLUMNS=80 and typer's rich width
TERMINAL_WIDTH=80, in a real process: typer reads the latter at import): no line wider than 80, no '…' anywhere,
every visible option name printed whole. And one naming of the YaRN options across config and niah."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from kanana_longctx.cli import app

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["config"], ["niah"], ["plot"], ["bench"]]


def run80(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80", "PYTHONPATH": str(REPO)}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "kanana_longctx", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def visible_option_names(command) -> list[str]:
    return [name for param in command.params if not getattr(param, "hidden", False)
            for name in (*param.opts, *param.secondary_opts) if name.startswith("-")]


def click_command(args: list[str]):
    group = typer.main.get_command(app)
    return group.commands[args[0]] if args else group


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "kanana-longctx")
def test_help_fits_80_columns_with_every_option_name_whole(args):
    result = run80(*args, "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in result.stdout, [line for line in lines if "…" in line]
    words = set(result.stdout.replace("│", " ").replace(",", " ").split())
    missing = [name for name in visible_option_names(click_command(args)) if name not in words]
    assert not missing, missing


@pytest.mark.parametrize("extra", [[], ["--yarn", "--check", "--dry-run"]], ids=["show", "check"])
def test_config_table_headers_are_whole_at_80_columns(extra):
    import transformers

    result = run80("config", str(REPO / "examples" / "kanana-like-8b-config.json"), *extra)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("┃"))
    assert f"transformers {transformers.__version__}" in header
    assert ("config.json says" if not extra else "independent YaRN") in header
    tables = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert all(len(line) <= 80 for line in tables) and "…" not in result.stdout


def test_config_and_niah_name_the_yarn_numbers_alike():
    config, niah = click_command(["config"]), click_command(["niah"])
    yarn = {"--yarn-factor", "--yarn-original", "--yarn-beta-fast", "--yarn-beta-slow"}
    assert yarn <= set(visible_option_names(config)) and yarn <= set(visible_option_names(niah))
    hidden = {name for param in config.params if param.hidden for name in param.opts}
    assert {"--factor", "--original-max-position-embeddings", "--beta-fast", "--beta-slow"} <= hidden
