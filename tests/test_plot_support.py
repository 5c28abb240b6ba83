"""Synthetic NIAH runs for the plot tests (imported by test_plot_*.py; holds no tests of its own).

Usage: write_run(tmp_path / "run", lengths=[1000, 2000], depths=[0, 50, 100], score=lambda L, D: 1.0); plot(str(run))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

SMALL_LENGTHS = [1000, 2000, 3000, 4000]
SMALL_DEPTHS = [0.0, 50.0, 100.0]
README_DEPTHS = [float(x) for x in np.linspace(0, 100, 15)]
README_32K = list(range(1000, 32001, 1000))
README_128K = [int(round(x)) for x in np.linspace(1000, 128000, 15)]
GREEN = (0x0C, 0xD7, 0x9F)
RED = (0xF0, 0x49, 0x6E)


def write_run(
    run_dir: Path,
    lengths: Sequence[int],
    depths: Sequence[float],
    score: Callable[[int, float], float] = lambda length, depth: 1.0,
    *,
    model: str = "models/Kanana-Test-8B",
    form: str = "qaform",
    yarn: dict | None = None,
    skip: Callable[[int, float], bool] = lambda length, depth: False,
    repeats: int = 1,
    run_json: bool = True,
    planned: bool = True,
    extra: dict | None = None,
    tail: str = "",
    per_repeat: Callable[[int, float, int], float] | None = None,
    outcome: Callable[[float], str] | None = None,
) -> Path:
    """Write results.jsonl (+ run.json) with one row per cell and repeat, each with its own probe_id and `repeat`
    as the runner writes them; `skip` leaves cells out (a killed run). `per_repeat(length, depth, r)` scores each
    repeat; `outcome(score)` gives its class."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for length in lengths:
        for depth in depths:
            if skip(length, depth):
                continue
            for r in range(repeats):
                value = per_repeat(length, depth, r) if per_repeat else score(length, depth)
                row = {"probe_id": f"L{length}-D{depth:g}" + (f"-R{r}" if r else ""), "length": length,
                       "depth": depth, "score": value, "expected": "4711", "output": "4711", "n_tokens": length,
                       "needle_token_start": 0, "form": form, "repeat": r}
                if outcome:
                    row["outcome"] = outcome(value)
                lines.append(json.dumps(row))
    (run_dir / "results.jsonl").write_text("".join(line + "\n" for line in lines) + tail, encoding="utf-8")
    if run_json:
        info = {
            "model": model, "form": form, "lang": "en", "haystack": "pg", "haystack_hash": "abc",
            "grid": {"lengths": list(lengths), "depths": list(depths)} if planned else {}, "seed": 0,
            "yarn": yarn, "max_new_tokens": 16, "extra": extra or {},
        }
        (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return run_dir


def cell_centre(box: tuple[float, float, float, float], n_rows: int, n_cols: int, row: int, col: int) -> tuple[int, int]:
    """Pixel (x, y) at the centre of heatmap cell (row, col), from a panel box (left, top, right, bottom)."""
    left, top, right, bottom = box
    return (int(left + (col + 0.5) * (right - left) / n_cols), int(top + (row + 0.5) * (bottom - top) / n_rows))


def cell_colour(png: Path, box, n_rows: int, n_cols: int, row: int, col: int) -> tuple[float, float, float]:
    """Mean RGB of the middle half of a cell (a mean, so a hatched cell reads as its overall grey)."""
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    x, y = cell_centre(box, n_rows, n_cols, row, col)
    half_w = max(1, int((box[2] - box[0]) / n_cols / 4))
    half_h = max(1, int((box[3] - box[1]) / n_rows / 4))
    patch = image[y - half_h : y + half_h + 1, x - half_w : x + half_w + 1]
    return tuple(patch.reshape(-1, 3).mean(axis=0))


def near(colour, target, tol: float = 12.0) -> bool:
    return all(abs(c - t) <= tol for c, t in zip(colour, target))


def plot(*args: str):
    """`kanana-longctx plot ARGS` through the real CLI (typer's test runner)."""
    from typer.testing import CliRunner

    from kanana_longctx.cli import app

    return CliRunner().invoke(app, ["plot", *args])


def one_error_line(result) -> str:
    """The single `error: ...` line a bad input must produce (and no traceback)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]
