"""`kanana-longctx bench`: time the README grids with our runner against the usual HF loop (random weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kanana_longctx.cli import app
from kanana_longctx.cli.errors import friendly_errors

EPILOG = """Examples:

  kanana-longctx bench --shape llama-8b --preset readme-32k --json b32k.json

  kanana-longctx bench --preset readme-128k --naive-subset 0 --max-memory 50

  kanana-longctx bench --shape kanana-2.1b --naive-subset 0 --max-memory 50

  kanana-longctx bench --shape kanana-moe-a3b --naive-subset 64 --subset-only

  kanana-longctx bench --shape tiny --device cpu --lengths 256,512   [dim]# CPU[/]

Shapes: llama-8b, llama-32b, kanana-2.1b (Llama, head_dim 128 over hidden
1792, tied embeddings), kanana-moe-a3b (Qwen3-MoE, 64 experts, top-8),
kanana-2-a3b (DeepSeek-V3 MLA + MoE, 30B-A3B class, 61 GB in bf16),
kanana-2-a3b-12l (its per-layer shapes at 12 layers); tiny, tiny-2.1b,
tiny-moe, tiny-mla, tiny-sliding, tiny-hybrid for CPU runs. --subset-only
times prefix reuse against the plain loop on the same spread probes.
"""


@app.command("bench", epilog=EPILOG)
@friendly_errors
def bench(
    shape: Annotated[str, typer.Option("--shape", help="Random-weight model shape (the list below).")] = "llama-8b",
    preset: Annotated[str, typer.Option("--preset", "-p", help="Grid preset: quick, readme-32k, readme-128k.")] = "readme-32k",
    lengths: Annotated[Optional[str], typer.Option("--lengths", help="Custom lengths (overrides the preset).")] = None,
    depths: Annotated[Optional[str], typer.Option("--depths", help="Custom depths in percent.")] = None,
    naive_subset: Annotated[int, typer.Option("--naive-subset", help="Probes for the naive-loop comparison (0: skip).")] = 64,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Tokenizer (MODEL spec) to build the probes with.")] = "smollm2",
    attn: Annotated[str, typer.Option("--attn", help="auto | cudnn | fa2 | sdpa | eager")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto | cuda | cpu (cpu only with --shape tiny)")] = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="0: the runner's default.")] = 0,
    max_memory: Annotated[
        float,
        typer.Option("--max-memory", min=0.0, metavar="GIB", help="GiB our runner may plan to take, weights included (0: its own "
                     "share of the card); 50 plans an H200 like an 80 GB H100."),
    ] = 0.0,
    subset_only: Annotated[
        bool, typer.Option("--subset-only", help="Time ours and the naive loop on the --naive-subset probes only.")
    ] = False,
    engine: Annotated[str, typer.Option("--engine", help="Our runner's engine: auto | fast | reuse | hf.")] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the table as JSON here.")] = None,
) -> None:
    """Benchmark a README grid on a random-weight model: our runner vs one `generate` per probe."""
    from rich.console import Console
    from rich.table import Table

    from kanana_longctx.bench.grid_bench import BenchRequest, run_bench, write_report

    console = Console()
    report = run_bench(
        BenchRequest(
            shape=shape, preset=preset, lengths=lengths, depths=depths, naive_subset=naive_subset,
            tokenizer=tokenizer, attn=attn, device=device, max_new_tokens=max_new_tokens,
            max_memory_gib=max_memory, subset_only=subset_only, engine=engine,
        ),
        progress=lambda message: console.print(f"[dim]{message}[/]"),
    )
    table = Table(title=f"kanana-longctx bench: {report.shape} on {report.gpu}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("grid", f"{report.grid} ({report.probes} probes)"),
        ("prompt tokens", f"{report.prompt_tokens:,}"),
        ("prefill FLOPs (no reuse)", f"{report.flops:.3e}"),
        ("measured bf16 matmul", f"{report.matmul_tflops:.0f} TFLOP/s"),
        ("T_peak", f"{report.t_peak_s:.1f} s"),
        (f"ours ({report.engine}), {report.grid}", f"{report.ours_s:.1f} s = {report.ours_vs_t_peak:.2f} x T_peak"),
        ("ours: computed FLOPs, prefill, decode", f"{report.ours_computed_flops:.3e}, {report.ours_prefill_s:.1f} s ("
         f"{report.ours_prefill_tflops:.0f} TFLOP/s), {report.ours_decode_s:.1f} s"),
        ("ours: setup before the first probe", f"{report.ours_setup_s:.1f} s"),
        (f"naive loop, {report.naive_probes}-probe subset", f"{report.naive_s:.1f} s"),
        ("ours, same subset", f"{report.ours_subset_s:.1f} s (speed-up {report.speedup:.1f}x)"),
        ("peak GPU memory", f"{report.peak_memory_gib:.1f} GiB"
         + (f" (capped at {report.max_memory_gib:g} GiB)" if report.max_memory_gib else "")
         + (f"; naive loop {report.naive_peak_memory_gib:.1f} GiB" if report.naive_probes else "")),
        ("KV rows x prefill chunk", f"{report.kv_rows} x {report.chunk_tokens} tokens"),
        ("attention / engine", f"{report.attention} / {report.engine}"),
        ("max new tokens", str(report.max_new_tokens)),
        ("last-token logits vs transformers", f"rel err {report.logits_rel_err_ours:.2e} (eager vs sdpa: "
         f"{report.logits_rel_err_hf_eager:.2e}), argmax {report.argmax_agree}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if json_out:
        write_report(report, json_out)
        console.print(f"wrote {json_out}")
