"""kanana-longctx: long-context toolkit for the Kanana LLM family.

Importing the package is cheap on purpose: no torch, no transformers. Heavy modules are imported inside the
functions that need them so that `kanana-longctx --help` answers instantly.
"""

__version__ = "0.1.0"
