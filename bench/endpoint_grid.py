"""Time a NIAH grid through a local llama-server: one request in flight vs the server's default, prefix order on
vs off; report wall time and the prompt tokens the server took from its prefix cache. A benchmark, not a test.

Usage: python bench/endpoint_grid.py [--lengths 1000,2000] [--depths 0,50,100] [--slots 2] [--json out.json]
       python bench/endpoint_grid.py --url http://127.0.0.1:8080/v1 -m MODEL   (a server you started yourself)

Without --url it starts llama-server from the endpoint tests' cached build (tests/servers, built on first use)
serving the bundled SmolLM2 GGUF on the CPU, afresh for every configuration so that no run finds another's prompts
in the cache, with `--slots` parallel slots (the client's default concurrency is the slot count). Each
configuration is one `niah --endpoint` run through the library (kanana_longctx.run.runner.execute) into a
temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

CONFIGS = (  # (label, concurrency (None: the server's default), prefix order)
    ("concurrency 1, prefix order on", 1, True),
    ("default concurrency, prefix order on", None, True),
    ("concurrency 1, prefix order off", 1, False),
    ("default concurrency, prefix order off", None, False),
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an OpenAI base URL of a running server (default: start llama-server)")
    parser.add_argument("-m", "--model", default="smollm2", help="the served model's tokenizer (as niah -m)")
    parser.add_argument("--lengths", default="1000,2000")
    parser.add_argument("--depths", default="0,50,100")
    parser.add_argument("--slots", type=int, default=2, help="llama-server -np (started server only)")
    parser.add_argument("--context", type=int, default=4096, help="tokens per slot (started server only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


@contextlib.contextmanager
def serving(args, logs: Path):
    """The URL to send to: the given one, or a fresh llama-server of the cached test build."""
    if args.url:
        yield args.url
        return
    from kanana_longctx.hub import resolve_model
    from servers.build import ensure_build
    from servers.process import llama_server

    source = resolve_model("smollm2")
    with llama_server(ensure_build(), source.directory / source.gguf_file, logs, context=args.context,
                      slots=args.slots) as server:
        yield server.url


def run_config(args, probe_set, tokenizer, concurrency, prefix_order, work: Path) -> dict:
    from kanana_longctx.options import RunOptions
    from kanana_longctx.results import load_results, read_run_info
    from kanana_longctx.run.runner import execute

    out = work / f"c{concurrency or 0}-p{int(prefix_order)}"
    with serving(args, work / "logs") as url:
        options = RunOptions(model=args.model, endpoint=url, concurrency=concurrency or 0, prefix_order=prefix_order)
        t0 = time.perf_counter()
        summary = execute(probe_set, options, out, tokenizer=tokenizer)
        wall = time.perf_counter() - t0
    rows = load_results(out)[0]
    endpoint = read_run_info(out).extra["endpoint"]
    return {
        "concurrency": endpoint["concurrency"],
        "prefix_order": prefix_order,
        "probes": len(rows),
        "accuracy": round(summary.accuracy, 3),
        "wall_s": round(summary.wall_seconds, 1),  # sending the probes (discovery and pre-flight excluded)
        "total_s": round(wall, 1),
        "prompt_tokens": sum(r.extra.get("server_prompt_tokens") or 0 for r in rows),
        "cached_tokens": sum(r.extra.get("cached_tokens") or 0 for r in rows),
        "prefill_tokens": sum(r.prefill_tokens for r in rows),
        "server": endpoint["kind"] + " " + endpoint["version"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from kanana_longctx.hub import resolve_model
    from kanana_longctx.probes import ProbeRequest, build_probe_set
    from kanana_longctx.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model(args.model))
    probe_set = build_probe_set(ProbeRequest(lengths=_ints(args.lengths), depths=_ints(args.depths)), tokenizer)
    results = []
    with tempfile.TemporaryDirectory(prefix="endpoint-bench-") as tmp:
        for label, concurrency, prefix_order in CONFIGS:
            row = run_config(args, probe_set, tokenizer, concurrency, prefix_order, Path(tmp))
            results.append({"config": label, **row})
            print(f"{label:40s} {row['concurrency']} in flight  wall {row['wall_s']:7.1f} s  cached "
                  f"{row['cached_tokens']:6d} of {row['prompt_tokens']:6d} prompt tokens  accuracy {row['accuracy']}",
                  flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "grid": {"lengths": _ints(args.lengths), "depths": _ints(args.depths), "probes": len(probe_set.probes)},
        "slots": None if args.url else args.slots,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
