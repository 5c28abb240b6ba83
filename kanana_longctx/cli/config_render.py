"""Rendering for `kanana-longctx config`: the show table, the outcome of --yarn/--no-yarn, the --check report.

Usage: show(Console(), path, config); outcome(console, file_outcome, dry_run); check(console, ..., result, False)

stdout only (errors go through friendly_errors to stderr), except the notes of a dry run, which go to stderr so
that stdout stays a clean patch. Tables fit 80 columns: short headers, one table per RoPE block (per layer type
for per-layer-type configs).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kanana_longctx.cli.errors import stderr
from kanana_longctx.errors import BadInput, ConfigError
from kanana_longctx.yarn import params as yp


def _fmt(value, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[bold red]DIFF[/]"


def _blocks(config: dict) -> list[str | None]:
    """The RoPE blocks to show: None for a config with one, else each layer type with a block."""
    if config.get("rope_scaling"):
        return [None]
    nested = yp.nested_rope_keys(config)
    return [t for t in nested if config["rope_parameters"].get(t) is not None] or [None]


def _layer_count(config: dict, layer_type: str | None) -> str:
    if layer_type is None:
        return ""
    listed = config.get("layer_types") or []
    return f", {listed.count(layer_type)} of {len(listed)} layers"


def show(out: Console, path: Path, config: dict) -> None:
    """What the file says and what the installed transformers computes, per RoPE block, and the recipe --yarn
    would apply."""
    from kanana_longctx.yarn.check import transformers_rope

    any_yarn = mismatch = False
    blocks = _blocks(config)
    if blocks != [None]:
        out.print(f"RoPE settings of {path} (per layer type)", markup=False, soft_wrap=True)
    for layer_type in blocks:
        settings = yp.RopeSettings.from_config(config, layer_type)
        actual = transformers_rope(config, layer_type)
        any_yarn |= settings.is_yarn
        mismatch |= _show_block(out, path, config, settings, actual)
    try:
        from kanana_longctx.yarn.recipes import recipe_for

        out.print(f"--yarn would apply {recipe_for(config).describe()}.", markup=False, soft_wrap=True)
    except BadInput as exc:
        out.print(f"--yarn needs options here: {exc}", markup=False, soft_wrap=True)
    if mismatch:
        out.print(
            "[bold red]transformers does not apply the YaRN this file declares[/]: run --check for the reason "
            "and the fix.",
            soft_wrap=True,
        )
    elif any_yarn:
        out.print("YaRN is declared; verify that it takes effect with --check.")
    else:
        out.print("No YaRN. Apply it with --yarn (--dry-run shows the diff first).")


def _show_block(out: Console, path: Path, config: dict, settings, actual) -> bool:
    """One block's table; True when transformers does not apply the YaRN the block declares."""
    from kanana_longctx.yarn.check import effective_context
    from kanana_longctx.yarn.rope_math import expected_rope

    try:
        expected = expected_rope(config, settings.layer_type) if settings.is_yarn else None
    except ConfigError:
        expected = None
    original = settings.original_max_position_embeddings
    declared_context = settings.max_position_embeddings
    if settings.is_scaled and settings.factor and (original or declared_context):
        declared_context = int((original or declared_context) * settings.factor)
    if settings.layer_type:
        title = f"{settings.layer_type} RoPE{_layer_count(config, settings.layer_type)}"
    else:
        title = f"RoPE settings of {path}"
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("config.json says", no_wrap=True)
    table.add_column(f"transformers {actual.version}", no_wrap=True)
    own = f"rope_parameters.{settings.layer_type}"
    block = " (its block)" if settings.source_key == own else f" ({settings.source_key or 'no block'})"
    theta_source = "its block" if settings.theta_source == own else settings.theta_source
    table.add_row("rope type", settings.rope_type + block, actual.rope_type)
    table.add_row("rope_theta", f"{settings.rope_theta:g} ({theta_source})", f"{actual.rope_theta:g}")
    table.add_row("factor", _fmt(settings.factor), f"{actual.max_ratio:.6g} (freq. ratio)")
    table.add_row("original ctx", _fmt(original, "d"), _fmt(actual.original_max_position_embeddings, "d"))
    mpe = (settings.max_position_embeddings, actual.max_position_embeddings)
    table.add_row("max_position", _fmt(mpe[0], "d"), _fmt(mpe[1], "d"))
    table.add_row("effective ctx", _fmt(declared_context, "d"), _fmt(effective_context(settings, actual), "d"))
    table.add_row(
        "attention",
        f"{expected.attention_factor:.6f}" if expected else "1.000000" if not settings.is_scaled else "-",
        f"{actual.attention_factor:.6f}",
    )
    if settings.is_yarn:
        table.add_row("beta_fast / slow", f"{_fmt(settings.beta_fast)} / {_fmt(settings.beta_slow)}", "")
    if settings.mscale is not None or settings.mscale_all_dim is not None:
        table.add_row("mscale / all_dim", f"{_fmt(settings.mscale)} / {_fmt(settings.mscale_all_dim)}", "")
    out.print(table)
    for message in actual.warnings:
        out.print(f"[dim]transformers warned: {message}[/]", soft_wrap=True)
    return expected is not None and (
        abs(actual.max_ratio - expected.max_ratio) > 1e-5 * expected.max_ratio
        or abs(actual.attention_factor - expected.attention_factor) > 1e-6
    )


def outcome(out: Console, result, dry_run: bool) -> None:
    """What --yarn / --no-yarn did (or, on a dry run, would do: the diff on stdout, the rest on stderr)."""
    if dry_run and result.changed:
        typer.echo(result.diff(), nl=False)  # raw text: rich would wrap long lines or eat [brackets]
    side = stderr if dry_run else out
    if not result.changed:
        if result.action == "yarn":
            text = f"YaRN is already applied as asked in {result.path}; nothing changed."
            side.print(text, markup=False, soft_wrap=True)
        else:
            text = result.notes[0] if result.notes else "nothing to change"
            side.print(f"{result.path}: {text}.", markup=False, soft_wrap=True)
        return
    notes = list(result.notes)
    if result.action == "no-yarn" and not dry_run:
        out.print(f"Removed YaRN from {result.path}: {notes.pop(0)}.", markup=False, soft_wrap=True)
    for note in notes:
        side.print(f"note: {note}", markup=False, soft_wrap=True)
    if dry_run:
        side.print("dry run: nothing written.")
    elif result.action == "yarn":
        keys = ", ".join(result.changed_keys)
        out.print(f"Applied YaRN to {result.path} (changed: {keys}).", markup=False, soft_wrap=True)
        out.print(f"Backup for --no-yarn: {result.backup}. Verify with --check.", markup=False, soft_wrap=True)


def _check_table(out: Console, title: str, report) -> None:
    from kanana_longctx.yarn.check import INV_FREQ_RTOL, effective_context

    a, e = report.actual, report.expected
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column(f"transformers {a.version}", no_wrap=True)
    rel = lambda x, y: abs(x - y) / abs(y)  # noqa: E731
    diff = report.inv_freq_max_rel_diff
    if e is not None:
        table.add_column("independent YaRN", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_row("rope type", a.rope_type, "yarn", _mark(a.rope_type == "yarn"))
        theta_ok = rel(a.rope_theta, e.rope_theta) < 1e-9
        table.add_row("rope_theta", f"{a.rope_theta:g}", f"{e.rope_theta:g}", _mark(theta_ok))
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
        freqs_ok = _mark(diff <= INV_FREQ_RTOL)
        table.add_row("inverse freqs", f"{len(a.inv_freq)} values", f"max rel diff {diff:.1e}", freqs_ok)
        ours = _fmt(effective_context(report.settings, a), "d")
        table.add_row("effective context", ours, str(e.params.effective_context), "")
    else:
        table.add_column("the file", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_row("rope type", a.rope_type, report.settings.rope_type, _mark(report.passed))
        table.add_row("attention factor", f"{a.attention_factor:.6f}", "1.000000", "")
        if diff is not None:
            table.add_row("inverse freqs", f"{len(a.inv_freq)} values", f"plain RoPE, diff {diff:.1e}", "")
    out.print(table)
    for message in a.warnings:
        out.print(f"[dim]transformers warned: {message}[/]", soft_wrap=True)


def check(out: Console, model: str, path: Path, config: dict, result, in_memory: bool) -> None:
    """The --check report: one table per RoPE block, the model-class probes, serving hints, the verdict."""
    from kanana_longctx.yarn.rope_math import is_mla
    from kanana_longctx.yarn.serving import serving_hints

    where = f"{path} (patched text, in memory)" if in_memory else str(path)
    if len(result.reports) > 1 or result.reports[0].settings.layer_type:
        out.print(f"YaRN check of {where}, per layer type", markup=False, soft_wrap=True)
    for report in result.reports:
        layer_type = report.settings.layer_type
        title = f"{layer_type}{_layer_count(config, layer_type)}" if layer_type else f"YaRN check of {where}"
        _check_table(out, title, report)
    for probe in result.probes:
        state = {True: "[green]ok[/]", False: "[bold red]DIFF[/]", None: "[yellow]not verified[/]"}[probe.ok]
        of = f" of {probe.layer_type}" if probe.layer_type else ""
        shown = probe.expected is not None and probe.name == "softmax scale"
        expected = f" (expected {probe.expected:.6f})" if shown else ""
        out.print(f"{probe.name}{of}: {probe.detail}{expected} {state}", soft_wrap=True, highlight=False)
    for problem in result.all_problems():
        out.print(f"[bold red]problem:[/] {problem}", soft_wrap=True)
    fixes = [f for r in result.reports for f in r.fixes]
    for fix in dict.fromkeys(fixes):
        out.print(f"[bold]fix:[/] {fix}", soft_wrap=True)
    yarn = result.yarn_reports
    if yarn:
        params = yarn[0].expected.params
        types = [r.settings.layer_type for r in yarn if r.settings.layer_type]
        out.print("\n[bold]Serve it[/]")
        served = str(path.parent) if Path(model).expanduser().is_file() else model
        architecture = (config.get("architectures") or [None])[0]
        for hint in serving_hints(served, params, str(path.parent), mla=is_mla(config), layer_types=types or None,
                                  architecture=architecture):
            text = hint.command if hint.supported else hint.note
            out.print(f"  {hint.engine}: {text}", markup=False, soft_wrap=True)
            if hint.supported and hint.without_patch:
                out.print(f"    unpatched: {hint.without_patch}", markup=False, soft_wrap=True)
    if result.passed:
        lines = []
        for report in yarn:
            a = report.actual
            of = f" on {report.settings.layer_type}" if report.settings.layer_type else ""
            lines.append(
                f"transformers {a.version} applies YaRN factor {report.expected.params.factor:g}{of}: attention "
                f"factor {a.attention_factor:.6f}, largest frequency ratio {a.max_ratio:.6g}, inverse frequencies "
                f"within {report.inv_freq_max_rel_diff:.1e} of the independent implementation."
            )
        out.print(f"\n[bold green]PASS[/]: {' '.join(lines)}", soft_wrap=True)
    else:
        out.print("\n[bold red]FAIL[/]", soft_wrap=True)
