"""`kanana-longctx config MODEL`: show, apply (--yarn), remove (--no-yarn) and verify (--check) YaRN in config.json.

Usage: kanana-longctx config kakaocorp/kanana-1.5-8b-instruct-2505 --yarn --check

Thin shell over kanana_longctx.yarn: parse and validate options, pick the recipe (recipes.recipe_for), call
files.apply_yarn_file / remove_yarn_file or verify.check_config, render with rich (config_render.py).
transformers is imported only when a table or --check needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from kanana_longctx.cli import app
from kanana_longctx.cli.errors import friendly_errors, stderr
from kanana_longctx.cli.options import (
    RecipeOpt,
    parse_number,
    RevisionOpt,
    YarnBetaFastOpt,
    YarnBetaSlowOpt,
    YarnFactorOpt,
    YarnOriginalOpt,
)
from kanana_longctx.errors import BadInput, CheckFailed

EXAMPLES = """[b]Examples[/b]

  kanana-longctx config ./kanana-8b               [dim]# the file vs transformers[/]

  kanana-longctx config ./kanana-8b --yarn --dry-run   [dim]# the diff only[/]

  kanana-longctx config org/name --yarn --check   [dim]# patch, then verify[/]

  kanana-longctx config ./kanana-2 --yarn --recipe kanana-2

  kanana-longctx config ./kanana-8b --no-yarn     [dim]# back to the original[/]
"""

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="A model directory with config.json, a config.json path, or a hub id (org/name) in the local HF cache.",
        show_default=False,
    ),
]
LayerTypesOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--layer-types",
        help="Per-layer-type configs: the layer types to patch (comma-separated or repeated; 'all') "
        "\\[default: the full-attention ones]",
        show_default=False,
        metavar="TYPES",
    ),
]
MaxPositionsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--max-positions",
        help="Also set max_position_embeddings (left unchanged by default).",
        metavar="INT",
        show_default=False,
    ),
]


def _hidden(name: str):
    return Annotated[Optional[str], typer.Option(name, hidden=True)]


# The spellings `config` had before the YaRN options were named alike across commands.
OLD_SPELLINGS = {
    "factor": "--factor",
    "original": "--original-max-position-embeddings",
    "beta_fast": "--beta-fast",
    "beta_slow": "--beta-slow",
    "max_positions": "--max-position-embeddings",
}
NEW_SPELLINGS = {
    "factor": "--yarn-factor",
    "original": "--yarn-original",
    "beta_fast": "--yarn-beta-fast",
    "beta_slow": "--yarn-beta-slow",
    "max_positions": "--max-positions",
}


def _merge(name: str, new_text, old_text, used: dict[str, object]):
    """The number given under either spelling (BadInput when it is not a number, or both are given and differ);
    records the flag used."""
    kind = int if name in ("original", "max_positions") else float
    new = parse_number(new_text, NEW_SPELLINGS[name], kind)
    old = parse_number(old_text, OLD_SPELLINGS[name], kind)
    if new is not None and old is not None and new != old:
        raise BadInput(f"{NEW_SPELLINGS[name]} {new} and {OLD_SPELLINGS[name]} {old} disagree; give one")
    if new is not None or old is not None:
        used[NEW_SPELLINGS[name] if new is not None else OLD_SPELLINGS[name]] = new if new is not None else old
    return new if new is not None else old


@app.command("config", epilog=EXAMPLES)
@friendly_errors
def config_command(
    model: ModelArg,
    yarn: Annotated[
        Optional[bool],
        typer.Option("--yarn/--no-yarn", help="Apply YaRN, or remove it (restoring the file).", show_default=False),
    ] = None,
    recipe: RecipeOpt = "auto",
    yarn_factor: YarnFactorOpt = None,
    yarn_original: YarnOriginalOpt = None,
    yarn_beta_fast: YarnBetaFastOpt = None,
    yarn_beta_slow: YarnBetaSlowOpt = None,
    layer_types: LayerTypesOpt = None,
    max_positions: MaxPositionsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unified diff; write nothing.")] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Verify with the installed transformers that YaRN takes effect (exit 1 if not)."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace existing scaling (llama3, linear, or YaRN we did not write); --no-yarn restores it.",
        ),
    ] = False,
    revision: RevisionOpt = None,
    factor_old: _hidden("--factor") = None,
    original_old: _hidden("--original-max-position-embeddings") = None,
    beta_fast_old: _hidden("--beta-fast") = None,
    beta_slow_old: _hidden("--beta-slow") = None,
    max_positions_old: _hidden("--max-position-embeddings") = None,
) -> None:
    """Show, apply, remove or verify YaRN RoPE scaling in a model's config.json."""
    used: dict[str, object] = {}
    numbers = {
        "factor": _merge("factor", yarn_factor, factor_old, used),
        "original": _merge("original", yarn_original, original_old, used),
        "beta_fast": _merge("beta_fast", yarn_beta_fast, beta_fast_old, used),
        "beta_slow": _merge("beta_slow", yarn_beta_slow, beta_slow_old, used),
    }
    max_positions = _merge("max_positions", max_positions, max_positions_old, used)
    used.update({"--recipe": None if recipe == "auto" else recipe, "--layer-types": layer_types})
    used["--force"] = force or None
    misplaced = [flag for flag, value in used.items() if value is not None]
    if yarn is not True and misplaced:
        verb = "applies" if len(misplaced) == 1 else "apply"
        raise BadInput(f"{', '.join(misplaced)} only {verb} with --yarn")
    if dry_run and yarn is None:
        raise BadInput("--dry-run needs --yarn or --no-yarn")
    if check and yarn is False:
        raise BadInput("--check verifies YaRN; run it without --no-yarn")
    from kanana_longctx.yarn.recipes import RECIPE_NAMES

    if recipe not in RECIPE_NAMES:
        raise BadInput(f"--recipe must be one of {', '.join(RECIPE_NAMES)}; got '{recipe}'")

    from kanana_longctx.cli import config_render as render
    from kanana_longctx.yarn import files
    from kanana_longctx.yarn.jsontext import load_object

    out = Console(highlight=False)
    path = files.locate_config(model, revision)
    if yarn is None:
        config = files.read_config_dict(path)
        if check:
            return _check(out, model, path, config)
        render.show(out, path, config)
        return
    on_wait = _waiting_note(path)
    if not yarn:
        render.outcome(out, files.remove_yarn_file(path, dry_run=dry_run, on_wait=on_wait), dry_run)
        return
    from kanana_longctx.yarn.recipes import recipe_for

    chosen = recipe_for(files.read_config_dict(path), recipe, layer_types=layer_types, **numbers)
    side = stderr if dry_run else out
    side.print(chosen.describe(), markup=False, soft_wrap=True)
    for note in chosen.notes:
        side.print(f"note: {note}", markup=False, soft_wrap=True)
    apply = dict(layer_types=chosen.layer_types, max_position_embeddings=max_positions, force=force)
    preview = files.apply_yarn_file(path, chosen.params, dry_run=True, **apply)
    # --check runs on the patched text before anything is written: a config transformers cannot even load is bad
    # input, refused with nothing written; a check that runs and says no is reported after the write (exit 1).
    result = _verify(preview.new_text, path) if check else None
    outcome = preview if dry_run else files.apply_yarn_file(path, chosen.params, on_wait=on_wait, **apply)
    render.outcome(out, outcome, dry_run)
    if check:
        if outcome.new_text != preview.new_text:  # another process changed the file in between
            result = _verify(outcome.new_text, path)
        _report(out, model, path, load_object(outcome.new_text, str(path)), result, in_memory=dry_run)


def _waiting_note(path: Path):
    def note(pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        stderr.print(f"waiting for {who}, which is changing {path} ...", markup=False)

    return note


def _verify(text: str, path: Path):
    from kanana_longctx.yarn.jsontext import load_object
    from kanana_longctx.yarn.verify import check_config

    return check_config(load_object(text, str(path)))


def _check(out: Console, model: str, path: Path, config: dict) -> None:
    from kanana_longctx.yarn.verify import check_config

    _report(out, model, path, config, check_config(config), in_memory=False)


def _report(out: Console, model: str, path: Path, config: dict, result, in_memory: bool) -> None:
    from kanana_longctx.cli import config_render as render

    render.check(out, model, path, config, result, in_memory)
    if not result.passed:
        raise CheckFailed(f"YaRN check failed: {result.all_problems()[0]}")
