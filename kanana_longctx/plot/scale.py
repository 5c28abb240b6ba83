"""The scale a run's scores are reported on, and how the figure draws it (pure).

Usage: scale = ScoreScale(0, 10, "ChatGPT Score", judge=True); scale.native(0.7) == 7.0; scale.drawn(0.7) == 7.0

Every reader stores scores as a share of their scale, in [0, 1] (what `aggregate` and the statistics use), and
keeps the scale itself: `lo..hi` in the source's own units (what the summary prints) and `draw_factor` for the
figure. Our runs score 0..1 and are drawn x10 on the Kanana README's 0-10 bar; a foreign judge's 1-10 grades are
printed and drawn as they are, under their own label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoreScale:
    lo: float = 0.0  # native value of the worst score
    hi: float = 1.0  # native value of a perfect score
    label: str = "Score"  # the colour bar's label
    draw_factor: float = 1.0  # figure value = native value x this (10 for our 0-1 scores on the 0-10 bar)
    judge: bool = False  # graded by an LLM judge: never a Bernoulli trial, so no Wilson interval or McNemar

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def share(self, native: float) -> float:
        """Native value -> share of the scale in [0, 1] (what rows store)."""
        return (float(native) - self.lo) / self.span

    def native(self, share):
        """Share of the scale -> the source's own units (arrays pass through elementwise)."""
        return self.lo + np.asarray(share, dtype=float) * self.span if isinstance(share, np.ndarray) else (
            self.lo + float(share) * self.span
        )

    def drawn(self, share):
        return self.native(share) * self.draw_factor

    @property
    def vmin(self) -> float:
        return self.lo * self.draw_factor

    @property
    def vmax(self) -> float:
        return self.hi * self.draw_factor

    @property
    def range_text(self) -> str:
        return f"{self.lo:g}-{self.hi:g}"

    def format(self, native: float) -> str:
        """A native value at the precision its scale needs: 0.267 on 0-1, 7.27 on 0-10, 72.7 on 0-100."""
        if native != native:  # NaN
            return "-"
        decimals = 3 if self.span <= 1 else 2 if self.span <= 10 else 1
        return f"{native:.{decimals}f}"

    def format_difference(self, native: float) -> str:
        return "-" if native != native else "+" + self.format(native) if native >= 0 else self.format(native)


def kanana_scale(scorer: str) -> ScoreScale:
    """Our runs: scores in [0, 1], drawn x10 to keep the README's 0-10 colour bar; the label says both."""
    return ScoreScale(lo=0.0, hi=1.0, label=f"Score ({scorer}, ×10)", draw_factor=10.0)
