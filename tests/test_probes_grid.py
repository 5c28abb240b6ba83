"""Grids: the README presets, list/range parsing, depth spacing and the errors users see."""

from __future__ import annotations

import pytest

from kanana_longctx.errors import ProbeError
from kanana_longctx.probes.grid import PRESETS, parse_depths, parse_lengths, resolve_grid, spaced_depths

README_DEPTHS = (0, 7, 14, 21, 29, 36, 43, 50, 57, 64, 71, 79, 86, 93, 100)


def test_readme_32k_is_the_heatmap_grid():
    grid = PRESETS["readme-32k"]
    assert grid.lengths == tuple(range(1000, 32001, 1000)) and len(grid.lengths) == 32
    assert grid.depths == README_DEPTHS
    assert grid.size == 480


def test_readme_128k_lengths_are_rounded_linspace():
    grid = PRESETS["readme-128k"]
    assert grid.lengths == (
        1000, 10071, 19143, 28214, 37286, 46357, 55429, 64500, 73571, 82643, 91714, 100786, 109857, 118929, 128000,
    )
    assert grid.depths == README_DEPTHS and grid.size == 225


def test_quick_is_the_default_and_small():
    grid = resolve_grid()
    assert grid.name == "quick" and grid.lengths == PRESETS["quick"].lengths
    assert max(grid.lengths) <= 8192 and grid.size <= 30


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1000,2000", (1000, 2000)),
        ("2000, 1000,1000", (1000, 2000)),
        ("1000:4000:1000", (1000, 2000, 3000, 4000)),
        ("500,1000:3000:1000", (500, 1000, 2000, 3000)),
        ("1_000", (1000,)),
        ("1000:32000:1000", tuple(range(1000, 32001, 1000))),
    ],
)
def test_parse_lengths(text, expected):
    assert parse_lengths(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1000,abc", "cannot parse lengths 'abc'"),
        ("", "empty list"),
        ("1000,,2000", "empty item"),
        ("4000:1000:1000", "stop >= start"),
        ("1000:4000:0", "step > 0"),
        ("1500.5", "positive whole number"),
        ("0", "positive whole number"),
        ("-5", "length -5 is not a positive whole number"),
        ("1:100000000:1", "expands to"),
    ],
)
def test_parse_lengths_errors(text, fragment):
    with pytest.raises(ProbeError, match=fragment):
        parse_lengths(text)


def test_parse_depths_lists_ranges_and_bounds():
    assert parse_depths("0,50,100") == (0.0, 50.0, 100.0)
    assert parse_depths("0:100:25") == (0.0, 25.0, 50.0, 75.0, 100.0)
    assert parse_depths("12.5") == (12.5,)
    with pytest.raises(ProbeError, match="outside 0..100"):
        parse_depths("0,150")
    with pytest.raises(ProbeError, match="cannot parse depths"):
        parse_depths("half")


def test_sigmoid_spacing_is_dense_at_both_ends():
    linear, sigmoid = spaced_depths(11, "linear"), spaced_depths(11, "sigmoid")
    assert sigmoid[0] == 0.0 and sigmoid[-1] == 100.0 and list(sigmoid) == sorted(sigmoid)
    assert sigmoid[1] < linear[1] and sigmoid[-2] > linear[-2]  # closer to the ends than linear spacing
    assert sigmoid[5] == 50.0
    with pytest.raises(ProbeError, match="depth spacing"):
        spaced_depths(5, "cubic")


def test_resolve_grid_combinations():
    custom = resolve_grid(lengths="1000,2000", depths="0,100")
    assert (custom.name, custom.lengths, custom.depths) == ("custom", (1000, 2000), (0.0, 100.0))
    mixed = resolve_grid(preset="readme-32k", depths="50")
    assert mixed.name == "readme-32k-custom" and len(mixed.lengths) == 32 and mixed.depths == (50.0,)
    counted = resolve_grid(lengths="1000", depth_count=3)
    assert counted.depths == (0.0, 50.0, 100.0)
    sig = resolve_grid(preset="readme-32k", spacing="sigmoid")
    assert len(sig.depths) == 15 and sig.depths != PRESETS["readme-32k"].depths


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"preset": "readme-64k"}, "unknown preset 'readme-64k'"),
        ({"depths": "0,50", "spacing": "sigmoid"}, "do not combine"),
        ({"depths": "0,50", "depth_count": 4}, "do not combine"),
        ({"spacing": "log"}, "unknown depth spacing"),
        ({"depth_count": 0}, "at least 1"),
    ],
)
def test_resolve_grid_errors(kwargs, fragment):
    with pytest.raises(ProbeError, match=fragment):
        resolve_grid(**kwargs)
