"""The bounds of every numeric option, in one light module (no imports), so that the CLI's typer ranges and the
library's own checks read the same numbers and `kanana-longctx --help` stays fast.

Usage: from kanana_longctx.limits import MAX_LENGTH; typer.Option(..., min=1, max=MAX_LENGTH)

Each bound is far past any real run and low enough that a typo is refused before it costs anything: `-l 10000000`
before gigabytes of probes are built, `--batch-size 1e9` before a model loads.
"""

MAX_LENGTH = 1 << 21  # tokens of one probe: 16x Kanana's 128K
MAX_REPEATS = 1000  # probes per grid cell
MAX_DEPTHS = 1000  # --depth-count
MAX_BATCH_SIZE = 4096
MAX_NEW_TOKENS = 8192
MAX_PROCESSES = 1024  # --gpus, --tp
MAX_MEMORY_GIB = 1 << 20
MAX_LIMIT = 10**9  # --limit
MAX_SEED = 2**63 - 1
MAX_DPI = 1200  # plot --dpi
