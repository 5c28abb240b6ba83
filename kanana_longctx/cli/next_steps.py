"""The line a command ends with when it wrote something: what to type next, copy-pastable into a shell.

Usage: stdout.print(plot_hint(out_dir)); stdout.print(rerun_hint(ctx, "niah", out_dir, drop={"dry_run"}))

A new user's first run ends with a results directory and no idea what reads it; a dry run ends with prompts and
no word on how to run them. Paths are shell-quoted (a directory with a space or a `$` still pastes as one word);
the rebuilt command keeps only what was typed (click's parameter sources), so it reads like the user's own.
"""

from __future__ import annotations

import shlex
from pathlib import Path

PROG = "kanana-longctx"


def plot_hint(out_dir: Path | str) -> str:
    """`next: kanana-longctx plot DIR` for a run directory that holds results."""
    return f"next: {PROG} plot {shlex.quote(str(out_dir))}"


def _words(param, value) -> list[str]:
    """One option as it would be typed: its longest name, then its value (flags: the name alone)."""
    if isinstance(value, (list, tuple)):
        return [word for item in value for word in _words(param, item)]
    if getattr(param, "is_flag", False) and isinstance(value, bool):
        if value:
            return [max(param.opts, key=len)]
        return [max(param.secondary_opts, key=len)] if param.secondary_opts else []
    return [max(param.opts, key=len), shlex.quote(str(value))]


def rerun_hint(ctx, command: str, out_dir: Path | str, drop: frozenset[str] | set[str] = frozenset()) -> str:
    """`next: kanana-longctx COMMAND ...` with the options given on the command line (or from the environment),
    minus `drop` (parameter names), and `--out DIR` always explicit (the run must find these files again)."""
    words = [PROG, command]
    for param in ctx.command.params:
        name = param.name
        if name in drop or name == "out":
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        words += _words(param, ctx.params[name])
    words += ["--out", shlex.quote(str(out_dir))]
    return "next: " + " ".join(words)
