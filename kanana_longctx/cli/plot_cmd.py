"""`kanana-longctx plot`: placeholder until its issue lands (registered so the layout is visible)."""
