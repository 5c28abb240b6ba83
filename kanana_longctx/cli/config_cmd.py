"""`kanana-longctx config`: placeholder until its issue lands (registered so the layout is visible)."""
