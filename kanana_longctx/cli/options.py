"""Option types shared by several commands (typer `Annotated` aliases), so that help texts stay identical."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RevisionOpt = Annotated[
    Optional[str],
    typer.Option("--revision", help="Branch, tag or commit of a hub id, resolved in the local HF cache (offline)."),
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]

# YaRN numbers, one naming for every command (config, niah). None means "the recipe's value"; the old `config`
# spellings stay accepted as hidden aliases in config_cmd.py. They are read as text and converted inside the command
# (parse_number), so that "--yarn-factor abc" is one line and exit 2 like every other bad input, not click's box.
YarnFactorOpt = Annotated[
    Optional[str],
    typer.Option("--yarn-factor", help="YaRN factor \\[default: the recipe's]", metavar="FLOAT", show_default=False),
]
YarnOriginalOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-original",
        help="The trained context length \\[default: the recipe's, or the config's own]",
        metavar="INT",
        show_default=False,
    ),
]
YarnBetaFastOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-beta-fast", help="YaRN beta_fast \\[default: the recipe's]", metavar="FLOAT", show_default=False
    ),
]
YarnBetaSlowOpt = Annotated[
    Optional[str],
    typer.Option(
        "--yarn-beta-slow", help="YaRN beta_slow \\[default: the recipe's]", metavar="FLOAT", show_default=False
    ),
]


def parse_number(value: str | None, flag: str, kind: type = float):
    """An option's text as a finite float (or an int), None when not given; BadInput (one line, exit 2) otherwise."""
    import math

    from kanana_longctx.errors import BadInput

    if value is None:
        return None
    try:
        number = kind(value.strip())
    except ValueError:
        raise BadInput(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise BadInput(f"{flag} must be a finite number, got {value!r}")
    return number


RecipeOpt = Annotated[
    str,
    typer.Option(
        "--recipe",
        help="YaRN recipe: auto (by architecture), kanana-1.5, kanana-2 or custom.",
        metavar="NAME",
    ),
]
