"""Compare the raw outputs of two runs probe by probe (e.g. `--engine fast` vs `--engine hf`).

Usage: python bench/compare_outputs.py RUN_A RUN_B   -> prints identical/different counts, exits 1 on a difference
"""

from __future__ import annotations

import sys

from kanana_longctx.results import load_results


def main(a: str, b: str) -> int:
    ra = {r.probe_id: r for r in load_results(a)[0]}
    rb = {r.probe_id: r for r in load_results(b)[0]}
    common = sorted(set(ra) & set(rb))
    different = [k for k in common if ra[k].output != rb[k].output]
    print(f"{len(common)} probes in both runs: {len(common) - len(different)} identical outputs, {len(different)} different")
    for k in different[:10]:
        print(f"  {k}: {ra[k].output!r} vs {rb[k].output!r}")
    return 1 if different or not common else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
