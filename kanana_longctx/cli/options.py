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
