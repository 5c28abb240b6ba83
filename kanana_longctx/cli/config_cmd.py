"""`kanana-longctx config MODEL`: show, apply (--yarn), remove (--no-yarn) and verify (--check) YaRN in config.json.

Usage: kanana-longctx config kakaocorp/kanana-1.5-8b-instruct-2505 --yarn --check

Thin shell over kanana_longctx.yarn: parse and validate options, call files.apply_yarn_file / remove_yarn_file or
check.check_config_dict, render with rich. transformers is imported only when a table or --check needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from kanana_longctx.cli import app
from kanana_longctx.cli.errors import friendly_errors, stderr
from kanana_longctx.cli.options import RevisionOpt
from kanana_longctx.errors import BadInput, CheckFailed
from kanana_longctx.yarn import params as yp

EXAMPLES = """[b]Examples[/b]

  kanana-longctx config ./kanana-8b                [dim]# what the file says, what transformers computes[/]

  kanana-longctx config ./kanana-8b --yarn --dry-run   [dim]# the diff; nothing written[/]

  kanana-longctx config org/name --yarn --check    [dim]# patch in the HF cache, then verify[/]

  kanana-longctx config ./kanana-8b --no-yarn      [dim]# back to the original file[/]
"""

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A model directory with config.json, a config.json path, or a hub id (org/name) in the local HF cache.",
        show_default=False,
    ),
]


@app.command("config", epilog=EXAMPLES)
@friendly_errors
def config_command(
    model: ModelArg,
    yarn: Annotated[
        Optional[bool],
        typer.Option(
            "--yarn/--no-yarn",
            help="Apply YaRN, or remove it (restoring the previous RoPE settings).",
            show_default=False,
        ),
    ] = None,
    factor: Annotated[Optional[float], typer.Option(help=f"YaRN factor \\[default: {yp.DEFAULT_FACTOR}]")] = None,
    original_max_position_embeddings: Annotated[
        Optional[int],
        typer.Option(help=f"Trained context length \\[default: {yp.DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS}]"),
    ] = None,
    beta_fast: Annotated[
        Optional[float], typer.Option(help=f"YaRN beta_fast \\[default: {yp.DEFAULT_BETA_FAST:g}]")
    ] = None,
    beta_slow: Annotated[
        Optional[float], typer.Option(help=f"YaRN beta_slow \\[default: {yp.DEFAULT_BETA_SLOW:g}]")
    ] = None,
    max_position_embeddings: Annotated[
        Optional[int], typer.Option(help="Also set max_position_embeddings (left unchanged by default).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unified diff; write nothing.")] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Verify with the installed transformers that YaRN takes effect (exit 1 if not)."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing non-YaRN scaling (llama3, linear, ...); --no-yarn restores it."
        ),
    ] = False,
    revision: RevisionOpt = None,
) -> None:
    """Show, apply, remove or verify YaRN RoPE scaling in a model's config.json."""
    yarn_only = {
        "--factor": factor,
        "--original-max-position-embeddings": original_max_position_embeddings,
        "--beta-fast": beta_fast,
        "--beta-slow": beta_slow,
        "--max-position-embeddings": max_position_embeddings,
        "--force": force or None,
    }
    misplaced = [flag for flag, value in yarn_only.items() if value is not None]
    if yarn is not True and misplaced:
        verb = "applies" if len(misplaced) == 1 else "apply"
        raise BadInput(f"{', '.join(misplaced)} only {verb} with --yarn")
    if dry_run and yarn is None:
        raise BadInput("--dry-run needs --yarn or --no-yarn")
    if check and yarn is False:
        raise BadInput("--check verifies YaRN; run it without --no-yarn")
    params = None
    if yarn:
        given = {
            "factor": factor,
            "original_max_position_embeddings": original_max_position_embeddings,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
        }
        params = yp.YarnParams(**{k: v for k, v in given.items() if v is not None})  # validates: BadInput, exit 2
        if max_position_embeddings is not None and max_position_embeddings <= 0:
            raise BadInput(f"--max-position-embeddings must be positive, got {max_position_embeddings}")

    from kanana_longctx.yarn import files
    from kanana_longctx.yarn.jsontext import load_object

    out = Console(highlight=False)
    path = files.locate_config(model, revision)
    if yarn is None:
        config = files.read_config_dict(path)
        if check:
            return _check(out, model, path, config)
        from kanana_longctx.yarn.check import transformers_rope

        _render_show(out, path, config, transformers_rope(config))
        return
    if yarn:
        outcome = files.apply_yarn_file(
            path, params, max_position_embeddings=max_position_embeddings, force=force, dry_run=dry_run
        )
    else:
        outcome = files.remove_yarn_file(path, dry_run=dry_run)
    _render_outcome(out, outcome, dry_run)
    if check:
        _check(out, model, path, load_object(outcome.new_text, str(path)), in_memory=dry_run)


def _check(out: Console, model: str, path: Path, config: dict, in_memory: bool = False) -> None:
    from kanana_longctx.yarn.check import check_config_dict

    report = check_config_dict(config)
    _render_check(out, model, path, report, in_memory)
    if not report.passed:
        raise CheckFailed(f"YaRN check failed: {report.problems[0]}")


# -- rendering (stdout; errors go through friendly_errors to stderr) ---------------------------------------------


def _fmt(value, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]DIFF[/]"


def _render_show(out: Console, path: Path, config: dict, actual) -> None:
    from kanana_longctx.errors import ConfigError
    from kanana_longctx.yarn.check import effective_context
    from kanana_longctx.yarn.rope_math import expected_rope

    settings = yp.RopeSettings.from_config(config)
    try:
        expected = expected_rope(config) if settings.is_yarn else None
    except ConfigError:
        expected = None
    original = settings.original_max_position_embeddings
    declared_context = settings.max_position_embeddings
    if settings.is_scaled and settings.factor and (original or declared_context):
        declared_context = int((original or declared_context) * settings.factor)
    table = Table(title=f"RoPE settings of {path}", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("config.json says", no_wrap=True)
    table.add_column(f"transformers {actual.version} computes", no_wrap=True)
    block = f" ({settings.source_key})" if settings.source_key else " (no scaling block)"
    table.add_row("rope type", settings.rope_type + block, actual.rope_type)
    table.add_row("rope_theta", f"{settings.rope_theta:g} ({settings.theta_source})", f"{actual.rope_theta:g}")
    table.add_row("factor", _fmt(settings.factor), f"{actual.max_ratio:.6g} (largest frequency ratio)")
    table.add_row("original context", _fmt(original, "d"), _fmt(actual.original_max_position_embeddings, "d"))
    table.add_row(
        "max_position_emb.", _fmt(settings.max_position_embeddings, "d"), _fmt(actual.max_position_embeddings, "d")
    )
    table.add_row("effective context", _fmt(declared_context, "d"), _fmt(effective_context(settings, actual), "d"))
    table.add_row(
        "attention factor",
        f"{expected.attention_factor:.6f}" if expected else "1.000000" if not settings.is_scaled else "-",
        f"{actual.attention_factor:.6f}",
    )
    if settings.is_yarn:
        table.add_row("beta_fast / beta_slow", f"{_fmt(settings.beta_fast)} / {_fmt(settings.beta_slow)}", "")
    out.print(table)
    for message in actual.warnings:
        out.print(f"[dim]transformers warned: {message}[/]", soft_wrap=True)
    if expected is not None and (
        abs(actual.max_ratio - expected.max_ratio) > 1e-5 * expected.max_ratio
        or abs(actual.attention_factor - expected.attention_factor) > 1e-6
    ):
        out.print(
            f"[bold red]transformers {actual.version} does not apply the YaRN this file declares[/]: "
            "run --check for the reason and the fix.",
            soft_wrap=True,
        )
    elif settings.is_yarn:
        out.print("YaRN is declared; verify that it takes effect with --check.")
    else:
        out.print("No YaRN. Apply it with --yarn (--dry-run shows the diff first).")


def _render_outcome(out: Console, outcome, dry_run: bool) -> None:
    if dry_run and outcome.changed:
        typer.echo(outcome.diff(), nl=False)  # raw text: rich would wrap long lines or eat [brackets]
    if not outcome.changed:
        if outcome.action == "yarn":
            out.print(
                f"YaRN is already applied with these parameters in {outcome.path}; nothing changed.", soft_wrap=True
            )
        else:
            out.print(f"{outcome.path}: {outcome.notes[0] if outcome.notes else 'nothing to change'}.", soft_wrap=True)
        return
    notes = list(outcome.notes)
    if outcome.action == "no-yarn" and not dry_run:
        out.print(f"Removed YaRN from {outcome.path}: {notes.pop(0)}.", soft_wrap=True)
    # On a dry run stdout carries only the diff (so that `> yarn.patch` is a clean patch); the rest goes to stderr.
    side = stderr if dry_run else out
    for note in notes:
        side.print(f"note: {note}", soft_wrap=True)
    if dry_run:
        side.print("dry run: nothing written.")
    elif outcome.action == "yarn":
        out.print(f"Applied YaRN to {outcome.path} (changed: {', '.join(outcome.changed_keys)}).", soft_wrap=True)
        out.print(f"Backup for --no-yarn: {outcome.backup}. Verify with --check.", soft_wrap=True)


def _render_check(out: Console, model: str, path: Path, report, in_memory: bool) -> None:
    from kanana_longctx.yarn.check import INV_FREQ_RTOL, effective_context
    from kanana_longctx.yarn.serving import serving_hints

    a, e = report.actual, report.expected
    where = f"{path} (patched text, in memory)" if in_memory else str(path)
    table = Table(title=f"YaRN check of {where}", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column(f"transformers {a.version}", no_wrap=True)
    if e is not None:
        table.add_column("independent YaRN", no_wrap=True)
        table.add_column("", no_wrap=True)
        diff = report.inv_freq_max_rel_diff
        rel = lambda x, y: abs(x - y) / abs(y)  # noqa: E731
        table.add_row("rope type", a.rope_type, "yarn", _mark(a.rope_type == "yarn"))
        table.add_row(
            "rope_theta", f"{a.rope_theta:g}", f"{e.rope_theta:g}", _mark(rel(a.rope_theta, e.rope_theta) < 1e-9)
        )
        table.add_row(
            "attention factor",
            f"{a.attention_factor:.6f}",
            f"{e.attention_factor:.6f}",
            _mark(rel(a.attention_factor, e.attention_factor) < 1e-6),
        )
        table.add_row(
            "largest freq. ratio",
            f"{a.max_ratio:.6g}",
            f"{e.max_ratio:.6g}",
            _mark(rel(a.max_ratio, e.max_ratio) < INV_FREQ_RTOL),
        )
        table.add_row(
            "inverse freqs", f"{len(a.inv_freq)} values", f"max rel diff {diff:.1e}", _mark(diff <= INV_FREQ_RTOL)
        )
        table.add_row(
            "effective context", _fmt(effective_context(report.settings, a), "d"), str(e.params.effective_context), ""
        )
    else:
        table.add_row("rope type", a.rope_type)
        table.add_row("attention factor", f"{a.attention_factor:.6f}")
    out.print(table)
    for message in a.warnings:
        out.print(f"[dim]transformers warned: {message}[/]", soft_wrap=True)
    for problem in report.problems:
        out.print(f"[bold red]problem:[/] {problem}", soft_wrap=True)
    for fix in report.fixes:
        out.print(f"[bold]fix:[/] {fix}", soft_wrap=True)
    if e is not None:
        out.print("\n[bold]Serve it[/]")
        served = str(path.parent) if Path(model).expanduser().is_file() else model
        for hint in serving_hints(served, e.params, str(path.parent)):
            if hint.supported:
                out.print(f"  {hint.engine}: {hint.command}", markup=False, soft_wrap=True)
            else:
                out.print(f"  {hint.engine}: {hint.note}", markup=False, soft_wrap=True)
    if report.passed:
        verdict = (
            f"transformers {a.version} applies YaRN factor {e.params.factor:g}: attention factor "
            f"{a.attention_factor:.6f}, largest frequency ratio {a.max_ratio:.6g}, inverse frequencies within "
            f"{report.inv_freq_max_rel_diff:.1e} of the independent implementation."
        )
        out.print(f"\n[bold green]PASS[/]: {verdict}", soft_wrap=True)
    else:
        out.print("\n[bold red]FAIL[/]", soft_wrap=True)
