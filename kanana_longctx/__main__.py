"""`python -m kanana_longctx` is the same as the `kanana-longctx` console script."""

from kanana_longctx.cli import main

if __name__ == "__main__":
    main()
