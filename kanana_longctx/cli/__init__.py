"""The `kanana-longctx` command line: a thin typer shell over the library.

Usage: kanana-longctx [config|niah|plot|bench] --help

Each command module parses options, calls one library function and renders the result with rich. Importing this
package must stay cheap (no torch, no transformers): `kanana-longctx --help` answers in well under a second.
"""

from __future__ import annotations

import typer

from kanana_longctx import __version__

app = typer.Typer(
    name="kanana-longctx",
    help="Long-context toolkit for the Kanana LLM family: YaRN config patching, needle-in-a-haystack probes, "
    "fast GPU runs and README heatmaps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kanana-longctx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Long-context toolkit for the Kanana LLM family."""


def _register() -> None:
    # Imported here (not at the top) so that a broken optional command never hides the others' --help.
    from kanana_longctx.cli import config_cmd, niah_cmd, plot_cmd, bench_cmd  # noqa: F401


_register()


def main() -> None:
    """Console-script entry point."""
    app()
