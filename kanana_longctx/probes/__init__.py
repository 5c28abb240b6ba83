"""Needle-in-a-haystack probes: haystacks, templates, grids and exact-length probe assembly (pure, no torch)."""
