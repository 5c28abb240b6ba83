"""Turn library exceptions into one clean line on stderr and an exit code.

Every command is wrapped with `@friendly_errors`. A traceback is printed only when KANANA_LONGCTX_DEBUG is set to
a non-empty value other than 0: users get one line, developers can still see the stack.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from kanana_longctx.errors import KananaError

F = TypeVar("F", bound=Callable[..., object])

stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

DEBUG_ENV = "KANANA_LONGCTX_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    # The message is data (paths, user input like "0:100:0"): escape it so rich neither eats "[...]" as markup
    # nor turns ":100:" into an emoji.
    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code)


def out_of_memory_text(exc: BaseException) -> str:
    """torch's out-of-memory error as one line: what ran out, and what to do (finished probes are on disk)."""
    first = str(exc).split(". ")[0].strip() or "CUDA out of memory"
    return (f"out of GPU memory ({first}); the probes that finished are kept and the same command resumes: free "
            "the GPU (another process may hold memory) or lower --max-memory / --batch-size")


def friendly_errors(func: F) -> F:
    """Map KananaError (and a few OS errors) to one line + exit code; re-raise everything under debug."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KananaError as exc:
            if debug_enabled():
                raise
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            raise fail("interrupted", 130) from None
        except (OSError, ValueError) as exc:
            if debug_enabled():
                raise
            raise fail(f"{type(exc).__name__}: {exc}", 2) from None
        except Exception as exc:  # an internal bug: still one line, but say how to see more
            if debug_enabled():
                raise
            if type(exc).__name__ == "OutOfMemoryError":  # torch's, matched by name: the CLI imports no torch
                raise fail(out_of_memory_text(exc), 1) from None
            raise fail(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)", 3) from None

    return wrapper  # type: ignore[return-value]
