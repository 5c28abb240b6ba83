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
# spellings stay accepted as hidden aliases in config_cmd.py.
YarnFactorOpt = Annotated[
    Optional[float], typer.Option("--yarn-factor", help="YaRN factor \\[default: the recipe's]", show_default=False)
]
YarnOriginalOpt = Annotated[
    Optional[int],
    typer.Option(
        "--yarn-original",
        help="The trained context length \\[default: the recipe's, or the config's own]",
        show_default=False,
    ),
]
YarnBetaFastOpt = Annotated[
    Optional[float], typer.Option("--yarn-beta-fast", help="YaRN beta_fast \\[default: the recipe's]", show_default=False)
]
YarnBetaSlowOpt = Annotated[
    Optional[float], typer.Option("--yarn-beta-slow", help="YaRN beta_slow \\[default: the recipe's]", show_default=False)
]
RecipeOpt = Annotated[
    str,
    typer.Option(
        "--recipe",
        help="YaRN recipe: auto (by architecture), kanana-1.5, kanana-2 or custom.",
        metavar="NAME",
    ),
]
