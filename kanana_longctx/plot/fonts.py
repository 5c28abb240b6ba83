"""Find a font with Hangul and register it with matplotlib at plot time, so Korean model names and titles render.

Usage: with figure_fonts() as missing_hangul: ...build and save the figure...

matplotlib's bundled DejaVu has no Hangul: a Korean title would come out as empty boxes. We look, in order, at
$KANANA_LONGCTX_HANGUL_FONT (a .ttf/.otf/.ttc path), NanumGothic from the `koreanize-matplotlib` wheel (found without
importing it: its import rewrites matplotlib's global rcParams), fonts matplotlib already knows by a Korean family
name, and `fc-list :lang=ko`. The font is added to matplotlib's font manager, and used through an rc_context as a
per-glyph fallback behind DejaVu Sans, so Latin text looks exactly as in the README figures.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Iterator

FONT_ENV = "KANANA_LONGCTX_HANGUL_FONT"

# Family names of common Hangul fonts, in order of preference, as matplotlib's font manager reports them.
_KNOWN_FAMILIES = (
    "NanumGothic",
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Source Han Sans KR",
    "Malgun Gothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "UnDotum",
    "Baekmuk Gulim",
)


def contains_hangul(text: str) -> bool:
    """Hangul syllables, jamo or compatibility jamo anywhere in `text`."""
    return any(
        "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f" for ch in text
    )


def _koreanize_fonts() -> list[Path]:
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    fonts = Path(list(spec.submodule_search_locations)[0]) / "fonts"
    # matplotlib reads NanumGothicBold as weight 600 and ExtraBold as 700 (= "bold"); with only 400/600 the bold
    # title would log "Failed to find font weight bold" on every draw, so all three faces are registered.
    names = ("NanumGothic.ttf", "NanumGothicBold.ttf", "NanumGothicExtraBold.ttf")
    return [fonts / n for n in names if (fonts / n).is_file()]


def _fc_list_fonts() -> list[Path]:
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(
            ["fc-list", ":lang=ko", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    paths = [Path(line.split(":")[0].strip()) for line in out.splitlines() if line.strip()]
    return sorted(p for p in paths if p.suffix.lower() in (".ttf", ".otf", ".ttc") and p.is_file())


def _register(paths: list[Path]) -> str | None:
    """Add font files to matplotlib's font manager; return the family name of the first one that loads."""
    from matplotlib import font_manager

    family = None
    for path in paths:
        try:
            font_manager.fontManager.addfont(str(path))
            name = font_manager.FontProperties(fname=str(path)).get_name()
        except (OSError, RuntimeError, ValueError):
            continue  # an unreadable or unsupported file: try the next candidate
        family = family or name
    return family


@functools.lru_cache(maxsize=1)
def hangul_family() -> str | None:
    """The family name of a registered Hangul font, or None if there is none on this machine (cached: searched
    and registered once per process)."""
    env = os.environ.get(FONT_ENV, "").strip()
    if env and Path(env).is_file():
        family = _register([Path(env)])
        if family:
            return family
    family = _register(_koreanize_fonts())
    if family:
        return family
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    for name in _KNOWN_FAMILIES:
        if name in known:
            return name
    return _register(_fc_list_fonts()[:4])


@contextlib.contextmanager
def figure_fonts(texts: tuple[str, ...] = ()) -> Iterator[bool]:
    """An rc_context with a Hangul fallback font when one exists. Yields True when some of `texts` has Hangul but
    no Hangul font was found (the caller warns; the figure is still drawn, with boxes for those glyphs)."""
    import matplotlib

    needs_hangul = any(contains_hangul(t) for t in texts)
    family = hangul_family() if needs_hangul else None
    missing = needs_hangul and family is None
    # A list of families makes matplotlib fall back per glyph: Latin from DejaVu (the README look), Hangul from ours.
    rc = {"font.family": ["DejaVu Sans"] + ([family] if family else [])}
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        if missing:
            # The caller reports the missing font once; matplotlib would add one warning per missing glyph.
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        yield missing
