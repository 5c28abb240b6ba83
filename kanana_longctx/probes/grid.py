"""Probe grids: named presets and the parsing of `--lengths` / `--depths`.

Usage: `resolve_grid(preset="readme-32k")`, `resolve_grid(lengths="1000:4000:1000", depths="0,50,100")`

`readme-32k` and `readme-128k` are the grids of the Kanana README heatmaps (32 x 15 and 15 x 15 cells);
`quick` is a CPU demo. Depths are percentages of the haystack span; linear spacing rounds
linspace(0, 100, n) to whole percent (0, 7, 14, 21, 29, ...), sigmoid spacing packs points near both ends
(the optional spacing of gkamradt's tool) and keeps one decimal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from kanana_longctx.errors import ProbeError
from kanana_longctx.limits import MAX_DEPTHS, MAX_LENGTH

README_DEPTHS = 15
SPACINGS = ("linear", "sigmoid")


def round_half_up(x: float, digits: int = 0) -> float:
    """Round like a person does (2.5 -> 3), not like Python's banker's round (2.5 -> 2)."""
    scale = 10**digits
    return math.floor(x * scale + 0.5) / scale


def linspace(start: float, stop: float, num: int) -> list[float]:
    if num == 1:
        return [float(start)]
    step = (stop - start) / (num - 1)
    return [start + i * step for i in range(num - 1)] + [float(stop)]


def spaced_depths(count: int, spacing: str = "linear") -> tuple[float, ...]:
    """`count` depths from 0 to 100 inclusive."""
    if count < 1:
        raise ProbeError(f"the number of depths must be at least 1, got {count}")
    if count > MAX_DEPTHS:
        raise ProbeError(f"the number of depths must be at most {MAX_DEPTHS}, got {count}")
    if spacing not in SPACINGS:
        raise ProbeError(f"unknown depth spacing '{spacing}' (choose linear or sigmoid)")
    points = linspace(0.0, 100.0, count)
    if spacing == "linear":
        values = [round_half_up(x) for x in points]
    else:
        values = [
            x if x in (0.0, 100.0) else round_half_up(100.0 / (1.0 + math.exp(-0.1 * (x - 50.0))), 1) for x in points
        ]
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Grid:
    name: str  # preset name, or "custom"
    lengths: tuple[int, ...]
    depths: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.lengths) * len(self.depths)

    def to_dict(self) -> dict:
        return {"name": self.name, "lengths": list(self.lengths), "depths": list(self.depths)}


PRESETS: dict[str, Grid] = {
    "quick": Grid("quick", (500, 1000, 2000, 4000), spaced_depths(5)),
    "readme-32k": Grid("readme-32k", tuple(range(1000, 32001, 1000)), spaced_depths(README_DEPTHS)),
    "readme-128k": Grid(
        "readme-128k",
        tuple(int(round_half_up(x)) for x in linspace(1000, 128000, 15)),
        spaced_depths(README_DEPTHS),
    ),
}

# A sign is accepted here so that "-d -10" reaches the range check ("depth -10 is outside 0..100"), not the syntax.
_NUMBER = r"[+-]?[0-9]+(?:\.[0-9]+)?"
_SYNTAX = {"lengths": "1000,2000 or 1000:32000:1000", "depths": "0,50,100 or 0:100:25"}
_RANGE = re.compile(rf"^({_NUMBER}):({_NUMBER}):({_NUMBER})$")


def _parse_list(text: str, what: str) -> list[float]:
    """`a,b,c` and inclusive ranges `start:stop:step`, mixed freely (`500,1000:4000:1000`)."""
    values: list[float] = []
    items = [item.strip().replace("_", "") for item in str(text).split(",")]
    if not any(items):
        raise ProbeError(f"empty list of {what}")
    for item in items:
        if not item:
            raise ProbeError(f"cannot parse {what} '{text}': empty item")
        ranged = _RANGE.match(item)
        if ranged:
            start, stop, step = (float(g) for g in ranged.groups())
            if step <= 0 or stop < start:
                raise ProbeError(f"cannot parse {what} '{item}': need start:stop:step with step > 0 and stop >= start")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            if count > 10_000:
                raise ProbeError(f"{what} '{item}' expands to {count:,} values")
            values.extend(start + i * step for i in range(count))
        elif re.fullmatch(_NUMBER, item):
            values.append(float(item))
        else:
            raise ProbeError(f"cannot parse {what} '{item}' (use {_SYNTAX.get(what, _SYNTAX['lengths'])})")
    return values


def parse_lengths(text: str) -> tuple[int, ...]:
    values = _parse_list(text, "lengths")
    for v in values:
        if v != int(v) or v < 1:
            raise ProbeError(f"length {v:g} is not a positive whole number of tokens")
        if v > MAX_LENGTH:
            raise ProbeError(f"length {v:,.0f} is more than {MAX_LENGTH:,} tokens")
    return tuple(sorted({int(v) for v in values}))


def parse_depths(text: str) -> tuple[float, ...]:
    values = _parse_list(text, "depths")
    for v in values:
        if not 0.0 <= v <= 100.0:
            raise ProbeError(f"depth {v:g} is outside 0..100 (percent)")
    return tuple(sorted({round(v, 6) + 0.0 for v in values}))  # + 0.0: "-0" is depth 0, not a probe id "D-0"


def resolve_grid(
    preset: str | None = None,
    lengths: str | None = None,
    depths: str | None = None,
    depth_count: int | None = None,
    spacing: str = "linear",
) -> Grid:
    """Combine a preset with explicit lengths/depths (explicit values win); `quick` when nothing is given."""
    if preset is not None and preset not in PRESETS:
        raise ProbeError(f"unknown preset '{preset}' (choose one of: {', '.join(PRESETS)})")
    if spacing not in SPACINGS:
        raise ProbeError(f"unknown depth spacing '{spacing}' (choose linear or sigmoid)")
    if depths is not None and (depth_count is not None or spacing != "linear"):
        raise ProbeError("--depths lists depths explicitly; do not combine it with --depth-count or --depth-spacing")
    base = PRESETS[preset] if preset else (PRESETS["quick"] if lengths is None else None)
    grid_lengths = parse_lengths(lengths) if lengths is not None else base.lengths
    if depths is not None:
        grid_depths = parse_depths(depths)
    elif depth_count is not None or spacing != "linear":
        default_count = len(base.depths) if base else README_DEPTHS
        grid_depths = spaced_depths(depth_count if depth_count is not None else default_count, spacing)
    else:
        grid_depths = base.depths if base else spaced_depths(README_DEPTHS)
    custom = lengths is not None or depths is not None or depth_count is not None or spacing != "linear"
    name = (preset or "quick") if base and not custom else (f"{preset}-custom" if preset else "custom")
    return Grid(name=name, lengths=grid_lengths, depths=grid_depths)
