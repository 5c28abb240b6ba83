"""Benchmark support: random-weight models of named shapes and the grid benchmark (used by `kanana-longctx bench`)."""
